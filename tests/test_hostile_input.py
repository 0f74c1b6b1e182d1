"""Hostile input: one row per bad option, file or data set, and the words of the one line
that must answer it. ``build`` rows build task, model and criterion in this process as
fairseq-train does (a process adds nothing there); ``train`` rows run ``fairseq-train``
and check that it exits non-zero with no traceback and that its last line says so."""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import (
    LM_DATA,
    PLUGIN,
    TINY_TRANSFORMER,
    TINY_TRANSLATION_TRANSFORMER,
    TRANSLATION_DATA,
    build,
    run_cli,
)
from fairseq.data import Dictionary

from fairseq_maligan.discriminators import Discriminator, DiscriminatorConfig, save_discriminator
from fairseq_maligan.errors import ConfigError

ADVERSARIAL = ["--criterion", "maligan_mixed", "--optimizer", "maligan_adam", "--lr", "0.001",
               "--max-tokens", "400"]
SEQGAN = ["--criterion", "seqgan"]
CNN = ["--disc-arch", "cnn_discriminator"]

BUILD_ROWS = [
    # options of the criteria and the discriminator
    (["--num-samples", "0"], "--num-samples must be at least 1, got 0"),
    (["--num-samples", "1"], "--num-samples 1 with --baseline uniform"),
    (["--prefix-decay", "-1"], "--prefix-decay must be at least 0"),
    (["--prefix-init", "-3"], "--prefix-init must be at least 0"),
    (["--prefix-init", "500"], "--prefix-init 500 is longer than"),
    (["--prefix-init", "2", "--prefix-min", "5"], "--prefix-min 5 is larger than --prefix-init 2"),
    (["--prefix-decay-updates", "0"], "--prefix-decay-updates must be at least 1"),
    (["--disc-steps", "0"], "--disc-steps must be at least 1"),
    (["--disc-warmup-updates", "-1"], "--disc-warmup-updates must be at least 0"),
    (["--sample-max-len", "0"], "--sample-max-len must be at least 1, got 0"),
    (["--sample-max-len", "-4"], "--sample-max-len must be at least 1, got -4"),
    (["--sample-max-len", "2", "--prefix-init", "4"], "--sample-max-len 2 is shorter"),
    (["--max-skipped-updates", "0"], "--max-skipped-updates must be at least 1"),
    (["--mle-weight", "-1"], "--mle-weight must be finite and not negative, got -1"),
    (["--mle-weight", "nan"], "--mle-weight must be finite and not negative, got nan"),
    (["--mle-weight", "inf"], "--mle-weight must be finite and not negative, got inf"),
    (["--disc-lr", "nan"], "--disc-lr must be positive, got nan"),
    (["--disc-lr", "inf"], "--disc-lr must be positive, got inf"),
    (["--disc-lr", "0"], "--disc-lr must be positive, got 0"),
    (["--disc-clip-norm", "-1"], "--disc-clip-norm must be finite and not negative"),
    ([*CNN, "--disc-filter-sizes", "a,b"], "--disc-filter-sizes"),
    ([*CNN, "--disc-filter-sizes", "0"], "--disc-filter-sizes"),
    ([*CNN, "--disc-filter-sizes", ""], "--disc-filter-sizes"),
    (["--disc-dropout", "1.0"], "--disc-dropout"),
    (["--disc-dropout", "-0.1"], "--disc-dropout"),
    (["--disc-hidden-dim", "0"], "--disc-hidden-dim"),
    (["--disc-embed-dim", "0"], "--disc-embed-dim"),
    (["--disc-layers", "0"], "--disc-layers"),
    ([*SEQGAN, "--rollouts", "0"], "--rollouts"),
    ([*SEQGAN, "--rollout-max-rows", "0"], "--rollout-max-rows"),
    ([*SEQGAN, "--rollout-refresh-updates", "0"], "--rollout-refresh-updates must be at least 1"),
    ([*SEQGAN, "--rollout-ema", "1.5"], "--rollout-ema must be in [0, 1), got 1.5"),
    # the data's shape
    (["--sample-break-mode", "none"], "use --sample-break-mode eos, not none"),
    (["--sample-break-mode", "complete"], "use --sample-break-mode eos, not complete"),
    (["--add-bos-token"], "--add-bos-token"),
    (["--tokens-per-sample", "5"], "longer than --tokens-per-sample 5"),
    # files named on the command line
    (["--disc-path", "{missing}"], "--disc-path: no such file: {missing}"),
    (["--disc-path", "{folder}"], "--disc-path: {folder} is a directory"),
    (["--disc-path", "{empty}"], "--disc-path: {empty} is empty (0 bytes)"),
    (["--disc-path", "{truncated_disc}"], "--disc-path: {truncated_disc} is truncated"),
    (["--disc-path", "{text}"], "--disc-path: {text} is not a file saved by torch.save"),
    (["--disc-path", "{generator}"], "is a generator checkpoint, not a discriminator"),
    (["--disc-path", "{disc_other_dict}"], "was trained with a dictionary of 12 symbols"),
    (["--disc-path", "{disc_conditional}"], "is a translation (conditional) discriminator"),
    (["--oracle-path", "{missing}"], "--oracle-path: no such file: {missing}"),
    (["--oracle-path", "{generator}"], "is a generator checkpoint, not a synthetic oracle"),
    (["--oracle-path", "{truncated_generator}"],
     "--oracle-path: {truncated_generator} is truncated"),
]

DATA_ROWS = [
    ("missing_dir", "maligan_language_modeling", "data directory not found: {data}"),
    ("empty_idx", "maligan_language_modeling", "{data}/train.idx is empty"),
    ("garbage_idx", "maligan_language_modeling", "{data}/train.idx is not a fairseq index"),
    ("short_idx", "maligan_language_modeling", "{data}/train.idx is truncated or damaged"),
    ("short_bin", "maligan_language_modeling", "{data}/train.bin is truncated"),
    ("small_dict", "maligan_language_modeling", "{data}/train.bin holds token id"),
    ("no_train", "maligan_language_modeling", "{data} has no train.idx/train.bin: no such split"),
    ("translation", "maligan_language_modeling",
     "{data} has no dict.txt: translation data (dict."),
    ("lm", "maligan_translation",
     "{data} has no dict.src.txt: language-model data: use --task maligan_language_modeling"),
]

TRAIN_ROWS = [
    (["--finetune-from-model", "{missing}"], "--finetune-from-model: no such file: {missing}"),
    (["--finetune-from-model", "{folder}"], "--finetune-from-model: {folder} is a directory"),
    (["--finetune-from-model", "{empty}"], "--finetune-from-model: {empty} is empty"),
    (["--finetune-from-model", "{truncated_generator}"], "is truncated"),
    (["--finetune-from-model", "{oracle}"], "is a synthetic oracle"),
    (["--finetune-from-model", "{translation_model}"],
     "is a translation model; this run trains a language model"),
    (["--finetune-from-model", "{generator_other_dict}"], "was trained with a dictionary of"),
    (["--restore-file", "{missing}"], "--restore-file: no such checkpoint: {missing}"),
    (["--restore-file", "{empty}"], "--restore-file: {empty} is empty"),
    (["--restore-file", "{text}"], "is not a file saved by torch.save"),
    (["--optimizer", "adam"], "needs --optimizer maligan_adam (got FairseqAdam)"),
    (["--num-samples", "0"], "--num-samples must be at least 1, got 0"),
]


def train_args(data: Path, save_dir: Path, task: str = "maligan_language_modeling") -> list:
    return [str(data), "--user-dir", PLUGIN, "--task", task, *TINY_TRANSFORMER, *LM_DATA,
            *ADVERSARIAL, "--cpu", "--max-update", "1", "--save-dir", str(save_dir)]


@pytest.fixture(scope="module")
def files(lm_data, mt_data, maligan_checkpoint, tmp_path_factory) -> dict[str, str]:
    """Bad files of every kind, and good ones of the wrong kind."""
    root = tmp_path_factory.mktemp("hostile")
    generator = maligan_checkpoint
    run_cli("train", [
        str(mt_data), "--user-dir", PLUGIN, "--task", "translation", *TRANSLATION_DATA,
        *TINY_TRANSLATION_TRANSFORMER, "--optimizer", "adam", "--lr", "0.001",
        "--max-tokens", "400", "--cpu", "--max-update", "1", "--save-dir", str(root / "mt"),
    ])
    other = Dictionary()
    for index in range(8):
        other.add_symbol(f"x{index}")
    dictionary = Dictionary.load(str(lm_data / "dict.txt"))
    save_discriminator(Discriminator(DiscriminatorConfig(), other), str(root / "other.pt"))
    save_discriminator(Discriminator(DiscriminatorConfig(), dictionary, dictionary, True),
                       str(root / "conditional.pt"))
    (root / "folder").mkdir()
    (root / "empty.pt").write_bytes(b"")
    (root / "text.pt").write_text("not a checkpoint\n")
    (root / "truncated_generator.pt").write_bytes(generator.read_bytes()[:2000])
    (root / "truncated_disc.pt").write_bytes((root / "other.pt").read_bytes()[:500])
    oracle = root / "oracle.pt"
    torch.save({"config": {"vocab_size": 4}, "state": {}}, oracle)
    state = torch.load(generator, weights_only=False)
    for key, value in list(state["model"].items()):
        if value.dim() and value.size(0) == len(dictionary):
            state["model"][key] = value[:-2].clone()
    torch.save(state, root / "other_dict.pt")
    return {
        "missing": str(root / "missing.pt"), "folder": str(root / "folder"),
        "empty": str(root / "empty.pt"), "text": str(root / "text.pt"),
        "generator": str(generator), "truncated_generator": str(root / "truncated_generator.pt"),
        "truncated_disc": str(root / "truncated_disc.pt"), "oracle": str(oracle),
        "disc_other_dict": str(root / "other.pt"),
        "disc_conditional": str(root / "conditional.pt"),
        "translation_model": str(root / "mt" / "checkpoint_last.pt"),
        "generator_other_dict": str(root / "other_dict.pt"),
    }


def fill(items: list, values: dict) -> list:
    return [item.format(**values) for item in items]


@pytest.mark.parametrize("options, words", BUILD_ROWS)
def test_build_row(lm_data, files, options, words):
    with pytest.raises(ConfigError) as caught:
        build(lm_data, TINY_TRANSFORMER + ADVERSARIAL + fill(options, files))
    assert words.format(**files) in str(caught.value)


def damaged_data(kind: str, lm_data: Path, mt_data: Path, root: Path) -> Path:
    """A copy of the tiny data set damaged in one way."""
    if kind == "missing_dir":
        return root / "nowhere"
    if kind in ("translation", "lm"):
        return mt_data if kind == "translation" else lm_data
    data = root / kind
    shutil.copytree(lm_data, data)
    index, binary = data / "train.idx", data / "train.bin"
    if kind == "empty_idx":
        index.write_bytes(b"")
    elif kind == "garbage_idx":
        index.write_bytes(b"garbage!" * 8)
    elif kind == "short_idx":
        index.write_bytes(index.read_bytes()[:30])
    elif kind == "short_bin":
        binary.write_bytes(binary.read_bytes()[:100])
    elif kind == "small_dict":
        lines = (data / "dict.txt").read_text().splitlines()
        (data / "dict.txt").write_text("\n".join(lines[:10]) + "\n")
    elif kind == "no_train":
        index.unlink()
        binary.unlink()
    return data


@pytest.mark.parametrize("kind, task, words", DATA_ROWS)
def test_data_row(lm_data, mt_data, tmp_path, kind, task, words):
    data = damaged_data(kind, lm_data, mt_data, tmp_path)
    extra = TINY_TRANSLATION_TRANSFORMER if task == "maligan_translation" else TINY_TRANSFORMER
    with pytest.raises(ConfigError) as caught:
        build(data, extra + ADVERSARIAL, task=task)
    assert words.format(data=data) in str(caught.value)


@pytest.mark.parametrize("options, words", TRAIN_ROWS)
def test_train_row(lm_data, files, tmp_path, options, words):
    proc = run_cli("train", train_args(lm_data, tmp_path / "run") + fill(options, files),
                   check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert words.format(**files) in proc.stderr.strip().splitlines()[-1]


def test_the_table_is_long_enough():
    assert len(BUILD_ROWS) + len(DATA_ROWS) + len(TRAIN_ROWS) >= 50
