"""``maligan_language_modeling`` and ``maligan_translation``: the stock tasks plus what
adversarial training needs. Validation adds sample-based figures to the stock validation
loss: one sample per valid row, the discriminator's accuracy on valid rows and on those
samples, their mean length, and NLL-oracle (``--oracle-path``, language models) or the
BLEU of sampled translations against the references (translation). Checkpoints are saved
under the stock task's name (see ``patches``), so stock fairseq tools load them.
"""

import os
from dataclasses import dataclass, field
from typing import Optional

import sacrebleu
from fairseq import metrics
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


@register_task("maligan_language_modeling", dataclass=MaliganLanguageModelingConfig)
class MaliganLanguageModelingTask(SampleStatisticsMixin, LanguageModelingTask):
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
        """Stock loading, plus one-line errors for data the criteria cannot train on."""
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
class MaliganTranslationTask(SampleStatisticsMixin, TranslationTask):
    """Translation with a discriminator-owning criterion; the discriminator reads the source."""

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        check_data_dir(cfg.data)
        return super().setup_task(cfg, **kwargs)

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
