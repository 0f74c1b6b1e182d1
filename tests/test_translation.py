"""Every criterion on translation: sampler, conditional discriminator, stock generate."""

import re

import pytest
import torch
from conftest import (
    PLUGIN,
    TINY_TRANSLATION_LSTM,
    TINY_TRANSLATION_TRANSFORMER,
    TRANSLATION_DATA,
    build,
    first_batch,
    run_cli,
)

from fairseq_maligan.sampling import sample_continuations, token_log_probs

ARCHS = {"transformer": TINY_TRANSLATION_TRANSFORMER, "lstm": TINY_TRANSLATION_LSTM}
COMMON = ["--cpu", "--max-tokens", "500", "--seed", "3", "--num-workers", "0",
          "--log-format", "simple", "--log-interval", "1"]
ADVERSARIAL = [
    "--user-dir", PLUGIN, "--task", "maligan_translation", "--optimizer", "maligan_adam",
    "--lr", "0.001", "--num-samples", "2", "--prefix-init", "3", "--prefix-decay", "1",
    "--prefix-decay-updates", "2", "--disc-hidden-dim", "8", "--disc-embed-dim", "8",
    "--disc-lr", "0.001", "--sample-max-len", "16",
]


@pytest.fixture(scope="module", params=sorted(ARCHS))
def translator(request, mt_data):
    torch.manual_seed(0)
    _, task, model, criterion = build(
        mt_data, ARCHS[request.param] + ["--criterion", "maligan_mixed", "--prefix-init", "0",
                                  "--sample-max-len", "16"],
        task="maligan_translation",
    )
    return task, model, criterion, first_batch(task)


def test_sampled_targets_start_with_reference_prefix(translator):
    _, model, _, sample = translator
    rows = sample_continuations(model, sample, 2, 3, 16)
    order = torch.arange(sample["target"].size(0)).repeat_interleave(3)
    assert torch.equal(rows[:, :2], sample["target"][order, :2])
    naive = sample_continuations(model, sample, 2, 3, 16,
                                 generator=torch.Generator().manual_seed(4), recompute_prefix=True)
    fast = sample_continuations(model, sample, 2, 3, 16, generator=torch.Generator().manual_seed(4))
    assert torch.equal(naive, fast)


def test_encoder_once_scoring_equals_full_forward(translator):
    _, model, _, sample = translator
    model.eval()
    rows = sample_continuations(model, sample, 0, 2, 16)
    order = torch.arange(sample["target"].size(0)).repeat_interleave(2)
    once = token_log_probs(model, sample, rows, order)
    net_input = sample["net_input"]
    inputs = torch.cat([net_input["prev_output_tokens"][order, :1], rows[:, :-1]], 1)
    full = model(net_input["src_tokens"][order], net_input["src_lengths"][order], inputs)
    lprobs = model.get_normalized_probs(full, log_probs=True).gather(-1, rows.unsqueeze(-1))
    mask = rows.ne(model.decoder.dictionary.pad())
    assert torch.allclose(once[mask], lprobs.squeeze(-1)[mask], atol=1e-5)
    model.train()


def test_discriminator_reads_the_source(translator, monkeypatch):
    _, model, criterion, sample = translator
    assert criterion.discriminator.source_encoder is not None
    seen = []
    forward = criterion.discriminator.forward

    def recording(tokens, src_tokens=None):
        seen.append((tokens, src_tokens))
        return forward(tokens, src_tokens)

    monkeypatch.setattr(criterion.discriminator, "forward", recording)
    criterion.begin_update(10)  # N = 0: every row is sampled, the generator moves
    model.train()
    criterion(model, sample)
    src = sample["net_input"]["src_tokens"]
    real_tokens, real_src = seen[0]
    assert torch.equal(real_src, src)
    fake_tokens, fake_src = seen[1]
    assert torch.equal(fake_src, src.repeat_interleave(criterion.cfg.num_samples, dim=0))
    assert fake_tokens.size(0) == fake_src.size(0) != real_tokens.size(0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "criterion, arch",
    [("maligan_mixed", "transformer"), ("maligan_mixed", "lstm"),
     ("maligan_rollout", "transformer"), ("seqgan", "transformer")],
)
def test_train_then_stock_generate(mt_data, tmp_path, criterion, arch):
    extra = ["--rollouts", "2"] if criterion != "maligan_mixed" else []
    proc = run_cli("train", [
        str(mt_data), *ARCHS[arch], *TRANSLATION_DATA, *COMMON, *ADVERSARIAL,
        "--criterion", criterion, *extra, "--max-update", "4", "--save-dir", str(tmp_path),
    ])
    assert re.search(r"valid on 'valid' subset.*sample_bleu \d", proc.stdout + proc.stderr)
    proc = run_cli("generate", [
        str(mt_data), *TRANSLATION_DATA, "--path", str(tmp_path / "checkpoint_last.pt"),
        "--cpu", "--gen-subset", "test", "--beam", "2", "--max-tokens", "500",
    ])
    assert len(re.findall(r"^H-\d+", proc.stdout, re.MULTILINE)) == 40
    assert "BLEU" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_finetune_from_stock_translation_checkpoint(mt_data, tmp_path):
    """A checkpoint that stock fairseq writes (argparse.Namespace inside) fine-tunes."""
    mle = tmp_path / "mle"
    run_cli("train", [
        str(mt_data), "--task", "translation", *TINY_TRANSLATION_TRANSFORMER, *TRANSLATION_DATA,
        *COMMON, "--optimizer", "adam", "--lr", "0.005", "--max-update", "3",
        "--save-dir", str(mle),
    ])
    proc = run_cli("train", [
        str(mt_data), *TINY_TRANSLATION_TRANSFORMER, *TRANSLATION_DATA, *COMMON, *ADVERSARIAL,
        "--criterion", "maligan_mixed", "--max-update", "2",
        "--finetune-from-model", str(mle / "checkpoint_last.pt"),
        "--save-dir", str(tmp_path / "adv"),
    ])
    assert "loaded checkpoint" in (proc.stdout + proc.stderr).lower()
    tuned = torch.load(tmp_path / "adv" / "checkpoint_last.pt", weights_only=True)
    assert tuned["cfg"]["task"]["_name"] == "translation"
    assert isinstance(tuned["cfg"]["model"], dict)
