"""Two ranks on CPU (gloo, legacy_ddp): each criterion keeps both ranks identical; ranks
with different options, and a rank that freezes, stop the run with one line."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import GUARDED_ENV, LM_DATA, PLUGIN, ROOT, TINY_TRANSFORMER, params_equal, run_cli

COMMON = ["--cpu", "--max-tokens", "300", "--seed", "5", "--num-workers", "0",
          "--data-buffer-size", "0", "--log-format", "simple", "--log-interval", "1"]
ADVERSARIAL = [
    "--user-dir", PLUGIN, "--task", "maligan_language_modeling", "--optimizer", "maligan_adam",
    "--lr", "0.003", "--disc-lr", "0.003", "--num-samples", "2", "--prefix-init", "3",
    "--prefix-decay", "1", "--prefix-decay-updates", "2", "--disc-hidden-dim", "8",
    "--disc-embed-dim", "8", "--disc-warmup-updates", "1",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_two_ranks(args: list[str], per_rank: tuple[list, list] = ([], [])) -> list:
    """Both ranks' processes (one command line each, as on two machines)."""
    port = free_port()
    return [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "rank_launcher.py"), *args, *per_rank[rank],
             "--distributed-world-size", "2", "--distributed-rank", str(rank),
             "--distributed-init-method", f"tcp://127.0.0.1:{port}",
             "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
             "--distributed-no-spawn"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
                 **GUARDED_ENV},
        )
        for rank in (0, 1)
    ]


def run_two_ranks(args: list[str]) -> None:
    procs = start_two_ranks(args)
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{out[-5000:]}"


def ranks_agree(save_dir, updates: int) -> dict:
    states = [torch.load(save_dir / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert states[0]["num_updates"] == states[1]["num_updates"] == updates
    assert params_equal(states[0]["model"], states[1]["model"])
    assert params_equal(states[0]["criterion"], states[1]["criterion"])
    return states[0]


@pytest.fixture(scope="module")
def mle_checkpoint(lm_data, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("dist_mle")
    run_cli("train", [str(lm_data), "--task", "language_modeling", *TINY_TRANSFORMER, *LM_DATA,
                      *COMMON, "--optimizer", "adam", "--lr", "0.01", "--max-update", "4",
                      "--save-dir", str(save_dir)])
    return save_dir / "checkpoint_last.pt"


@pytest.mark.slow
def test_two_ranks_finetune_and_resume_stay_identical(lm_data, mle_checkpoint, tmp_path):
    args = [str(lm_data), *TINY_TRANSFORMER, *LM_DATA, *COMMON, *ADVERSARIAL,
            "--criterion", "maligan_mixed", "--finetune-from-model", str(mle_checkpoint),
            "--save-dir", str(tmp_path), "--save-interval-updates", "3"]
    run_two_ranks([*args, "--max-update", "5"])
    first = ranks_agree(tmp_path, 5)
    start = torch.load(mle_checkpoint, weights_only=True)["model"]
    assert not params_equal(start, first["model"]), "the generator did not move"
    run_two_ranks([*args, "--max-update", "8"])  # resumes from checkpoint_last.pt
    resumed = ranks_agree(tmp_path, 8)
    assert not params_equal(first["criterion"], resumed["criterion"]), "D did not move"


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["maligan_rollout", "seqgan"])
def test_two_ranks_rollout_criteria_stay_identical(lm_data, tmp_path, criterion):
    run_two_ranks([str(lm_data), *TINY_TRANSFORMER, *LM_DATA, *COMMON, *ADVERSARIAL,
                   "--criterion", criterion, "--rollouts", "2", "--max-update", "4",
                   "--save-dir", str(tmp_path)])
    state = ranks_agree(tmp_path, 4)
    if criterion == "seqgan":
        assert any(key.startswith("policy.") for key in state["criterion"])


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


@pytest.mark.slow
def test_ranks_whose_criterion_options_differ_stop_with_one_line(lm_data, tmp_path):
    args = [str(lm_data), *TINY_TRANSFORMER, *LM_DATA, *COMMON, *ADVERSARIAL,
            "--criterion", "maligan_mixed", "--max-update", "2", "--save-dir", str(tmp_path)]
    procs = start_two_ranks(args, ([], ["--num-samples", "3"]))  # the last one wins
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
        assert "ranks disagree on --num-samples" in last_line(out)


@pytest.mark.slow
def test_a_frozen_rank_stops_the_other_within_the_heartbeat_timeout(lm_data, tmp_path):
    """Rank 1 is frozen (SIGSTOP) mid-run; with --heartbeat-timeout 20 the collectives time
    out after 10 s, and rank 0 stops with one line instead of waiting 30 minutes."""
    args = [str(lm_data), *TINY_TRANSFORMER, *LM_DATA, *COMMON, *ADVERSARIAL,
            "--criterion", "maligan_mixed", "--max-update", "100000", "--disable-validation",
            "--no-save", "--save-dir", str(tmp_path), "--heartbeat-timeout", "20"]
    procs = start_two_ranks(args)
    try:
        for line in procs[0].stdout:
            if "num_updates 3" in line:
                break
        os.kill(procs[1].pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        rest = procs[0].communicate(timeout=300)[0]
        waited = time.monotonic() - frozen_at
    finally:
        procs[1].kill()
        procs[1].wait()
    assert procs[0].returncode != 0 and "Traceback" not in rest, rest[-3000:]
    assert waited < 10 + 30, f"rank 0 waited {waited:.0f} s"
    assert "rank 0 stopped at update" in last_line(rest)
