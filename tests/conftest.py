"""Shared fixtures: tiny oracle data, fairseq-built models, and a CLI runner."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = str(ROOT / "fairseq_maligan")
sys.path.insert(0, str(ROOT / "examples"))  # the experiment driver, examples/experiment.py

from fairseq import options, tasks  # noqa: E402
from fairseq.dataclass.utils import convert_namespace_to_omegaconf  # noqa: E402

import fairseq_maligan  # noqa: E402,F401  (registers the plugin in this process)

TINY_TRANSFORMER = [
    "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "16",
    "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2",
]
TINY_LSTM = [
    "--arch", "lstm_lm", "--decoder-embed-dim", "16", "--decoder-hidden-size", "16",
    "--decoder-out-embed-dim", "16",
]
LM_DATA = ["--sample-break-mode", "eos", "--tokens-per-sample", "32"]

# fairseq's training iterator collates batches in a daemon thread unless
# --data-buffer-size is 0. When training stops mid-epoch (--max-update) that thread is
# still inside torch as the interpreter exits, and the process may abort ("terminate
# called without an active exception") after its checkpoint is saved. A process started
# with GUARDED_ENV fails at once instead when it is fairseq-train, so a test sees every
# command that could (eval-lm and generate read every batch: see tests/guard).
BATCH_THREAD_GUARD = ROOT / "tests" / "guard"
GUARDED_ENV = {"PYTHONPATH": os.pathsep.join(
    filter(None, [str(BATCH_THREAD_GUARD), os.environ.get("PYTHONPATH")]))}


def run_cli(tool: str, args: list[str], cwd: Path | None = None, check: bool = True,
            env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a fairseq console tool (``train``, ``eval_lm``, ...) in a fresh process, under
    :data:`GUARDED_ENV`; ``train`` collates its batches in the loop."""
    if tool == "train" and "--data-buffer-size" not in args:
        args = [*args, "--data-buffer-size", "0"]
    proc = subprocess.run(
        [sys.executable, "-m", f"fairseq_cli.{tool}", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **GUARDED_ENV,
             **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"fairseq-{tool} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def make_oracle_dataset(out: Path, vocab: int = 40, seq_len: int = 8, train: int = 240,
                        valid: int = 40, seed: int = 0) -> Path:
    """Oracle text plus its fairseq binarised form in ``out/bin``."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_oracle_data.py"), "--out", str(out / "raw"),
         "--vocab-size", str(vocab), "--seq-len", str(seq_len), "--train", str(train),
         "--valid", str(valid), "--test", str(valid), "--seed", str(seed),
         "--embed-dim", "8", "--hidden-dim", "8"],
        check=True, capture_output=True,
    )
    run_cli("preprocess", [
        "--only-source", "--trainpref", str(out / "raw" / "train.txt"),
        "--validpref", str(out / "raw" / "valid.txt"), "--testpref", str(out / "raw" / "test.txt"),
        "--destdir", str(out / "bin"), "--workers", "1",
    ])
    return out / "bin"


@pytest.fixture(scope="session")
def lm_data(tmp_path_factory) -> Path:
    return make_oracle_dataset(tmp_path_factory.mktemp("oracle"))


@pytest.fixture(scope="session")
def maligan_checkpoint(lm_data, tmp_path_factory) -> Path:
    """A real generator checkpoint with criterion state: 3 updates of ``maligan_mixed``."""
    save_dir = tmp_path_factory.mktemp("maligan_ckpt")
    run_cli("train", [
        str(lm_data), "--user-dir", PLUGIN, "--task", "maligan_language_modeling",
        *TINY_TRANSFORMER, *LM_DATA, "--cpu", "--max-tokens", "400", "--seed", "2",
        "--num-workers", "0", "--criterion", "maligan_mixed", "--optimizer", "maligan_adam",
        "--lr", "0.005", "--prefix-init", "2", "--num-samples", "2", "--max-update", "3",
        "--save-dir", str(save_dir),
    ])
    return save_dir / "checkpoint_last.pt"


TINY_TRANSLATION_TRANSFORMER = [
    "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
    "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
    "--decoder-attention-heads", "2", "--share-all-embeddings",
]
TINY_TRANSLATION_LSTM = [
    "--arch", "lstm", "--encoder-embed-dim", "16", "--encoder-hidden-size", "16",
    "--decoder-embed-dim", "16", "--decoder-hidden-size", "16", "--decoder-out-embed-dim", "16",
]
TRANSLATION_DATA = ["--source-lang", "src", "--target-lang", "tgt"]


@pytest.fixture(scope="session")
def mt_data(tmp_path_factory) -> Path:
    """A tiny reversal task: the target is the source sentence backwards."""
    out = tmp_path_factory.mktemp("reverse")
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 300), ("valid", 40), ("test", 40)):
        sources = []
        for _ in range(count):
            length = int(torch.randint(3, 9, (1,), generator=generator))
            tokens = torch.randint(0, 20, (length,), generator=generator).tolist()
            sources.append([f"s{t}" for t in tokens])
        (out / f"{split}.src").write_text("".join(" ".join(s) + "\n" for s in sources))
        (out / f"{split}.tgt").write_text("".join(" ".join(s[::-1]) + "\n" for s in sources))
    run_cli("preprocess", [
        *TRANSLATION_DATA, "--joined-dictionary", "--trainpref", str(out / "train"),
        "--validpref", str(out / "valid"), "--testpref", str(out / "test"),
        "--destdir", str(out / "bin"), "--workers", "1",
    ])
    return out / "bin"


def build(data: Path, extra: list[str], task: str = "maligan_language_modeling"):
    """cfg, task, model and criterion built by fairseq from command-line arguments."""
    parser = options.get_training_parser()
    data_args = LM_DATA if "language_modeling" in task else TRANSLATION_DATA
    args = options.parse_args_and_arch(
        parser, [str(data), "--task", task, "--cpu", *data_args, *extra]
    )
    cfg = convert_namespace_to_omegaconf(args)
    task_obj = tasks.setup_task(cfg.task)
    task_obj.load_dataset("train")
    model = task_obj.build_model(cfg.model)
    criterion = task_obj.build_criterion(cfg.criterion)
    return cfg, task_obj, model, criterion


def first_batch(task, split: str = "train", max_sentences: int = 6) -> dict:
    task.load_dataset(split)
    dataset = task.dataset(split)
    items = [dataset[i] for i in range(max_sentences)]
    return dataset.collater(items)


def params_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
