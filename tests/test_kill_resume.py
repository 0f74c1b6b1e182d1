"""SIGKILL during training and during checkpoint writes: nothing is lost, nothing breaks."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import GUARDED_ENV, LM_DATA, PLUGIN, TINY_TRANSFORMER, params_equal, run_cli

from fairseq_maligan.criterions import prefix_length

ARGS = [
    "--user-dir", PLUGIN, "--task", "maligan_language_modeling", *TINY_TRANSFORMER, *LM_DATA,
    "--cpu", "--max-tokens", "300", "--seed", "11", "--num-workers", "0",
    "--data-buffer-size", "0",
    "--criterion", "seqgan", "--rollouts", "2", "--prefix-init", "4", "--prefix-decay", "1",
    "--prefix-decay-updates", "3", "--rollout-refresh-updates", "2",
    "--optimizer", "maligan_adam", "--lr", "0.003", "--disc-lr", "0.003",
    "--disc-hidden-dim", "8", "--disc-embed-dim", "8", "--disable-validation",
    "--save-interval-updates", "1", "--keep-interval-updates", "2", "--max-update", "10",
    "--log-format", "simple", "--log-interval", "1",
]


def kill_during_a_save(args: list[str], saves_before_kill: int, delay: float) -> None:
    """Start training, SIGKILL it ``delay`` seconds after its n-th "Saving checkpoint"."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fairseq_cli.train", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **GUARDED_ENV},
    )
    seen = 0
    for line in proc.stdout:
        if "Saving checkpoint to" in line:
            seen += 1
            if seen == saves_before_kill:
                time.sleep(delay)
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait(timeout=120)


@pytest.mark.slow
def test_sigkill_during_saves_then_resume_matches_uninterrupted(lm_data, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_cli("train", [str(lm_data), *ARGS, "--save-dir", str(straight)])

    draws = random.Random(0)
    args = [str(lm_data), *ARGS, "--save-dir", str(killed)]
    for _ in range(3):
        kill_during_a_save(args, draws.randint(1, 3), draws.uniform(0.0, 0.03))
        last = killed / "checkpoint_last.pt"
        if last.exists():  # never a truncated file in place of a good one
            torch.load(last, weights_only=True)
    run_cli("train", args)

    a = torch.load(straight / "checkpoint_last.pt", weights_only=True)
    b = torch.load(killed / "checkpoint_last.pt", weights_only=True)
    updates = b["optimizer_history"][-1]["num_updates"]
    assert updates == a["optimizer_history"][-1]["num_updates"] == 10
    assert prefix_length(updates, 0, 4, 1, 3, 0) == 1  # the same N in both runs
    assert params_equal(a["model"], b["model"])
    assert params_equal(a["criterion"], b["criterion"])  # discriminator and rollout policy
    assert any(key.startswith("policy.") for key in b["criterion"])
