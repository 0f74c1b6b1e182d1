"""fairseq-train with maligan_mixed end to end: fine-tuning, stock loading, exact resume."""

import re

import pytest
import torch
from conftest import LM_DATA, PLUGIN, TINY_LSTM, TINY_TRANSFORMER, params_equal, run_cli

from fairseq_maligan.files import safe_loading

COMMON = [
    "--cpu", "--max-tokens", "400", "--log-format", "simple", "--log-interval", "1",
    "--seed", "7", "--num-workers", "0",
]
ADVERSARIAL = [
    "--user-dir", PLUGIN, "--task", "maligan_language_modeling",
    "--criterion", "maligan_mixed", "--optimizer", "maligan_adam", "--lr", "0.001",
    "--num-samples", "2", "--prefix-init", "4", "--prefix-decay", "1",
    "--prefix-decay-updates", "2", "--disc-arch", "cnn_discriminator", "--disc-lr", "0.001",
    "--disc-hidden-dim", "8", "--disc-embed-dim", "8",
]


@pytest.fixture(scope="module")
def mle_lstm(lm_data, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("mle_lstm")
    run_cli("train", [
        str(lm_data), "--task", "language_modeling", *TINY_LSTM, *LM_DATA, *COMMON,
        "--optimizer", "adam", "--lr", "0.01", "--max-update", "6", "--save-dir", str(save_dir),
    ])
    return save_dir / "checkpoint_last.pt"


def test_finetune_lstm_from_mle_and_stock_eval_lm(lm_data, mle_lstm, tmp_path):
    save_dir = tmp_path / "adv"
    proc = run_cli("train", [
        str(lm_data), *TINY_LSTM, *LM_DATA, *COMMON, *ADVERSARIAL, "--max-update", "6",
        "--finetune-from-model", str(mle_lstm), "--save-dir", str(save_dir),
        "--oracle-path", str(lm_data.parent / "raw" / "oracle.pt"),
    ])
    log = proc.stdout + proc.stderr
    for key in ("mle/loss", "adv/loss", "adv/ess", "adv/kl", "adv/prefix_len", "disc/loss",
                "disc/acc_real", "disc/acc_fake", "disc/p_real", "disc/p_fake_std",
                "sample/len_fake", "sample/len_real", "sample/eos_fake", "sample/eos_real",
                "sample/clipped_ratio", "sample/entropy"):
        assert re.search(rf"(^|[ |]){re.escape(key)}[ =]", log, re.MULTILINE), f"{key} not logged"
    assert re.search(r"valid on 'valid' subset.*sample/oracle_invalid", log)

    with safe_loading():  # a stock lstm_lm checkpoint pickles an argparse.Namespace
        generator = torch.load(mle_lstm, weights_only=True)["model"]
    tuned = torch.load(save_dir / "checkpoint_best.pt", weights_only=True)
    assert not params_equal(generator, tuned["model"]), "the generator did not move"
    assert tuned["cfg"]["task"]["_name"] == "language_modeling"

    # Stock fairseq-eval-lm: no --user-dir, torch's weights_only loading left on.
    proc = run_cli("eval_lm", [
        str(lm_data), "--path", str(save_dir / "checkpoint_best.pt"), "--cpu",
        "--tokens-per-sample", "32", "--max-tokens", "400",
    ])
    assert re.search(r"Perplexity: \d", proc.stderr + proc.stdout)


CRITERIA = {
    "maligan_mixed": [],
    "maligan_rollout": ["--criterion", "maligan_rollout", "--rollouts", "2"],
    "seqgan": ["--criterion", "seqgan", "--rollouts", "2", "--prefix-init", "2",
               "--rollout-refresh-updates", "3"],
}


@pytest.mark.slow
@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_resume_matches_uninterrupted_run(lm_data, tmp_path, criterion):
    args = [str(lm_data), *TINY_TRANSFORMER, *LM_DATA, *COMMON, *ADVERSARIAL, *CRITERIA[criterion],
            "--disc-warmup-updates", "2", "--disc-steps", "2", "--save-interval-updates", "4",
            "--dropout", "0.1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_cli("train", [*args, "--max-update", "9", "--save-dir", str(straight)])
    run_cli("train", [*args, "--max-update", "5", "--save-dir", str(resumed)])
    proc = run_cli("train", [*args, "--max-update", "9", "--save-dir", str(resumed)])
    assert "Loaded checkpoint" in proc.stdout + proc.stderr

    a = torch.load(straight / "checkpoint_last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoint_last.pt", weights_only=True)
    names = {"maligan_mixed": "MaliganMixedCriterion", "seqgan": "SeqGANCriterion",
             "maligan_rollout": "MaliganRolloutCriterion"}
    assert a["optimizer_history"][-1]["criterion_name"] == names[criterion]
    assert a["optimizer_history"][-1]["num_updates"] == 9
    assert b["optimizer_history"][-1]["num_updates"] == 9
    assert params_equal(a["model"], b["model"])
    assert params_equal(a["criterion"], b["criterion"])
    assert any(k.startswith("discriminator.") for k in a["criterion"])
    if criterion == "seqgan":
        assert any(k.startswith("policy.") for k in a["criterion"])

    proc = run_cli("eval_lm", [
        str(lm_data), "--path", str(resumed / "checkpoint_last.pt"), "--cpu",
        "--tokens-per-sample", "32", "--max-tokens", "400",
    ])
    assert re.search(r"Perplexity: \d", proc.stderr + proc.stdout)
