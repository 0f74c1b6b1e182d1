"""``maligan_language_modeling`` and ``maligan_translation``: the stock tasks plus what
adversarial training needs. Validation adds sample-based figures to the stock validation
loss: one sample per valid row, the discriminator's accuracy on valid rows and on those
samples, their mean length, and NLL-oracle (``--oracle-path``, language models) or the
BLEU of sampled translations against the references (translation). Checkpoints are saved
under the stock task's name (see ``patches``), so stock fairseq tools load them.

Both tasks keep the training step's contract with an adversarial criterion, as wav2vec-U's
task does with its GAN: ``train_step`` tells the criterion the update number before the
forward, and ``optimizer_step`` steps only the parameter groups that the criterion's loss
reached in this update (the discriminator alone during its warm-up and k-1 of every k
updates). A stock task that an adversarial criterion is built on gets the same two steps
(``adopt_adversarial_steps``).
"""

import glob
import os
import struct
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import sacrebleu
from fairseq import metrics
from fairseq.data.indexed_dataset import IndexedDataset, MMapIndexedDataset
from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from .errors import ConfigError
from .oracle import Oracle
from .patches import STOCK_TASKS


@dataclass
class MaliganLanguageModelingConfig(LanguageModelingConfig):
    oracle_path: Optional[str] = field(
        default=None,
        metadata={"help": "synthetic oracle (scripts/make_oracle_data.py): report NLL-oracle"},
    )


def begin_update(criterion, optimizer, update_num: int) -> None:
    """Before the forward: the criterion learns the update number (its schedule and phase)."""
    if hasattr(criterion, "begin_update"):
        criterion.begin_update(update_num, optimizer)


def step_groups(optimizer, criterion) -> None:
    """Step the groups the criterion's loss reached on any rank (all, for other criteria)."""
    if hasattr(criterion, "groups_for_update"):
        optimizer.step(groups=criterion.groups_for_update())
    else:
        optimizer.step()


class AdversarialSteps:
    """The training step's contract with an adversarial criterion (see the module doc)."""

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        begin_update(criterion, optimizer, update_num)
        self.step_criterion = criterion
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(self, optimizer, model, update_num):
        step_groups(optimizer, getattr(self, "step_criterion", None))


def adopt_adversarial_steps(task, criterion) -> None:
    """Give a stock task instance the contract's two steps for ``criterion``."""
    if isinstance(task, AdversarialSteps):
        return
    stock_train_step = task.train_step

    def train_step(sample, model, criterion, optimizer, update_num, ignore_grad=False):
        begin_update(criterion, optimizer, update_num)
        return stock_train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def optimizer_step(optimizer, model, update_num):
        step_groups(optimizer, criterion)

    task.train_step, task.optimizer_step = train_step, optimizer_step


class SampleStatisticsMixin:
    """Validation that adds the criterion's sample statistics and the task's own scores."""

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if hasattr(criterion, "sample_statistics"):
            stats, rows = criterion.sample_statistics(model, sample)
            logging_output.update(stats)
            logging_output.update(self.score_samples(rows, sample))
        return loss, sample_size, logging_output

    def score_samples(self, rows, sample) -> dict:
        """Task-specific figures of the sampled rows (summed over batches and ranks)."""
        return {}


def check_data_dir(data: str) -> None:
    """A missing data directory is named in one line, not found deep inside fairseq."""
    for path in str(data).split(os.pathsep):
        if not os.path.isdir(path):
            raise ConfigError(f"data directory not found: {path}")


def data_path(data: str, epoch: int) -> str:
    """The folder fairseq reads in ``epoch`` (``DATA`` may list several, one per epoch)."""
    paths = str(data).split(os.pathsep)
    return paths[(epoch - 1) % len(paths)]


def check_binarized(prefix: str, dictionary) -> None:
    """A ``fairseq-preprocess`` output pair ``prefix.idx``/``prefix.bin`` that is damaged,
    or whose token ids do not fit ``dictionary``, is named in one line.

    Only the default ``mmap`` format is checked (its header, the ``.bin`` length the index
    promises, and the largest token id); other formats pass through.
    """
    index_file, data_file = prefix + ".idx", prefix + ".bin"
    if not (os.path.isfile(index_file) and os.path.isfile(data_file)):
        return
    with open(index_file, "rb") as stream:
        magic = stream.read(9)
    if not magic:
        raise ConfigError(f"{index_file} is empty: rerun fairseq-preprocess")
    if magic[:8] == IndexedDataset._HDR_MAGIC:
        return
    if magic != MMapIndexedDataset.Index._HDR_MAGIC:
        raise ConfigError(
            f"{index_file} is not a fairseq index (damaged?): rerun fairseq-preprocess"
        )
    try:
        index = MMapIndexedDataset.Index(index_file)
        sizes, pointers, dtype = index.sizes, index._pointers, index.dtype
    except (AssertionError, ValueError, KeyError, struct.error):
        raise ConfigError(f"{index_file} is truncated or damaged: rerun fairseq-preprocess"
                          ) from None
    if len(sizes) == 0:
        return
    expected = int(pointers[-1]) + int(sizes[-1]) * np.dtype(dtype).itemsize
    actual = os.path.getsize(data_file)
    if actual < expected:
        raise ConfigError(
            f"{data_file} is truncated: {actual} bytes where its index promises {expected}; "
            "rerun fairseq-preprocess"
        )
    count = expected // np.dtype(dtype).itemsize
    largest = int(np.memmap(data_file, dtype=dtype, mode="r", shape=(count,)).max())
    if largest >= len(dictionary):
        raise ConfigError(
            f"{data_file} holds token id {largest} but its dictionary has {len(dictionary)} "
            "symbols: the data was binarised with another dict.txt (fairseq-preprocess "
            "--srcdict)"
        )


@register_task("maligan_language_modeling", dataclass=MaliganLanguageModelingConfig)
class MaliganLanguageModelingTask(AdversarialSteps, SampleStatisticsMixin, LanguageModelingTask):
    """Language modelling with a discriminator-owning criterion (``maligan_mixed``, ...)."""

    def __init__(self, args, dictionary, output_dictionary=None, targets=None):
        super().__init__(args, dictionary, output_dictionary, targets)
        self.oracle = None
        if getattr(args, "oracle_path", None):
            self.oracle = Oracle.load(args.oracle_path)
            self.oracle_table = self.oracle.ids_for(self.target_dictionary)

    def score_samples(self, rows, sample) -> dict:
        if self.oracle is None:
            return {}
        return self.oracle.score_rows(rows, self.oracle_table)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        """Stock loading, plus one-line errors for missing, damaged or wrong data and for
        data the criteria cannot train on."""
        folder = data_path(self.args.data, epoch)
        prefix = os.path.join(folder, split)
        if not (os.path.isfile(prefix + ".idx") or os.path.isfile(prefix)):
            paired = glob.glob(prefix + ".*-*.*.idx")
            kind = (f"translation data ({os.path.basename(paired[0])}): use --task "
                    "maligan_translation") if paired else "no such split"
            raise ConfigError(f"{folder} has no {split}.idx/{split}.bin: {kind}")
        check_binarized(prefix, self.dictionary)
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        sizes = self.datasets[split].sizes
        if len(sizes) == 0 or sizes.max() <= 1:
            raise ConfigError(
                f"the {split} split in {self.args.data} holds only empty lines (no tokens "
                "besides EOS)"
            )
        limit = self.args.tokens_per_sample
        too_long = int((sizes > limit).sum())
        if too_long and not getattr(self.args, "skip_invalid_size_inputs_valid_test", False):
            raise ConfigError(
                f"{too_long} of {len(sizes)} {split} targets are longer than "
                f"--tokens-per-sample {limit} (longest: {int(sizes.max())} tokens with EOS): "
                "raise --tokens-per-sample or pass --skip-invalid-size-inputs-valid-test"
            )

    @classmethod
    def setup_task(cls, args, **kwargs):
        check_data_dir(args.data)
        folder = data_path(args.data, 1)
        if not os.path.isfile(os.path.join(folder, "dict.txt")):
            paired = glob.glob(os.path.join(folder, "dict.*.txt"))
            found = (f"translation data ({os.path.basename(paired[0])}): use --task "
                     "maligan_translation") if paired else "not a fairseq-preprocess output"
            raise ConfigError(f"{folder} has no dict.txt: {found}")
        return super().setup_task(args, **kwargs)


@dataclass
class MaliganTranslationConfig(TranslationConfig):
    sample_bleu: bool = field(
        default=True,
        metadata={"help": "report the BLEU of sampled translations in validation "
                  "(text after --eval-bleu-remove-bpe, sacreBLEU, tokenize none)"},
    )


BLEU_ORDER = 4


@register_task("maligan_translation", dataclass=MaliganTranslationConfig)
class MaliganTranslationTask(AdversarialSteps, SampleStatisticsMixin, TranslationTask):
    """Translation with a discriminator-owning criterion; the discriminator reads the source."""

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        check_data_dir(cfg.data)
        folder = data_path(cfg.data, 1)
        for lang in (cfg.source_lang, cfg.target_lang):
            if lang is not None and not os.path.isfile(os.path.join(folder, f"dict.{lang}.txt")):
                found = ("language-model data: use --task maligan_language_modeling"
                         if os.path.isfile(os.path.join(folder, "dict.txt"))
                         else "check --source-lang/--target-lang")
                raise ConfigError(f"{folder} has no dict.{lang}.txt: {found}")
        return super().setup_task(cfg, **kwargs)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs):
        """Stock loading, plus one-line errors for missing, damaged or wrong data."""
        folder = data_path(self.cfg.data, epoch)
        src, tgt = self.cfg.source_lang, self.cfg.target_lang
        for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
            prefix = os.path.join(folder, f"{split}.{pair}.")
            if os.path.isfile(prefix + f"{src}.idx"):
                check_binarized(prefix + src, self.src_dict)
                check_binarized(prefix + tgt, self.tgt_dict)
                break
        else:
            found = ("language-model data: use --task maligan_language_modeling"
                     if os.path.isfile(os.path.join(folder, f"{split}.idx"))
                     else "no such split or language pair")
            raise ConfigError(f"{folder} has no {split}.{src}-{tgt}.{src}.idx: {found}")
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)

    def score_samples(self, rows, sample) -> dict:
        if not self.cfg.sample_bleu:
            return {}
        bpe = self.cfg.eval_bleu_remove_bpe
        dictionary = self.target_dictionary

        def text(row):
            return dictionary.string(row[row.ne(dictionary.pad())], bpe)

        bleu = sacrebleu.corpus_bleu(
            [text(row) for row in rows], [[text(row) for row in sample["target"]]],
            tokenize="none",
        )
        stats = {"sample_bleu_sys_len": bleu.sys_len, "sample_bleu_ref_len": bleu.ref_len}
        for order in range(BLEU_ORDER):
            stats[f"sample_bleu_counts_{order}"] = bleu.counts[order]
            stats[f"sample_bleu_totals_{order}"] = bleu.totals[order]
        return stats

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)

        def total(key):
            return int(sum(float(log.get(key, 0)) for log in logging_outputs))

        if total("sample_bleu_sys_len") > 0:
            bleu = sacrebleu.BLEU.compute_bleu(
                correct=[total(f"sample_bleu_counts_{i}") for i in range(BLEU_ORDER)],
                total=[total(f"sample_bleu_totals_{i}") for i in range(BLEU_ORDER)],
                sys_len=total("sample_bleu_sys_len"),
                ref_len=total("sample_bleu_ref_len"),
                smooth_method="exp",
            )
            metrics.log_scalar("sample_bleu", bleu.score, round=2)


STOCK_TASKS["maligan_language_modeling"] = "language_modeling"
STOCK_TASKS["maligan_translation"] = "translation"
