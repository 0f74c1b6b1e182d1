"""scripts/export_generator.py and scripts/pretrain_discriminator.py."""

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY_TRANSFORMER, build

COMMON = ["--cpu", "--max-tokens", "400", "--seed", "2", "--num-workers", "0"]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_export_generator_loads_with_from_pretrained(lm_data, maligan_checkpoint, tmp_path):
    script("export_generator.py", str(maligan_checkpoint), str(tmp_path / "generator.pt"))
    exported = torch.load(tmp_path / "generator.pt", weights_only=True)
    original = torch.load(maligan_checkpoint, weights_only=True)
    assert exported["criterion"] is None and "last_optimizer_state" not in exported
    assert exported["cfg"]["task"]["_name"] == "language_modeling"
    assert all(torch.equal(exported["model"][k], v) for k, v in original["model"].items())
    # A fresh interpreter that never imports the plugin.
    code = (
        "import sys, torch\n"
        "from fairseq.models.transformer_lm import TransformerLanguageModel\n"
        "hub = TransformerLanguageModel.from_pretrained(sys.argv[1], 'generator.pt',"
        " data_name_or_path=sys.argv[2])\n"
        "assert 'fairseq_maligan' not in sys.modules\n"
        "scores = hub.score('w1 w2 w3')['positional_scores']\n"
        "print(len(scores), bool(torch.isfinite(scores).all()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(lm_data)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "3 True"  # one score per word


def test_pretrained_discriminator_loads_with_disc_path(lm_data, maligan_checkpoint, tmp_path):
    disc_file = tmp_path / "disc.pt"
    proc = script(
        "pretrain_discriminator.py", str(lm_data), "--generator", str(maligan_checkpoint),
        "--output", str(disc_file), "--disc-arch", "cnn_discriminator",
        "--disc-embed-dim", "8", "--disc-hidden-dim", "8", "--updates", "20",
        "--max-tokens", "400",
    )
    assert "valid accuracy" in proc.stdout
    saved = torch.load(disc_file, weights_only=True)
    assert saved["arch"]["disc_arch"] == "cnn_discriminator" and not saved["conditional"]
    _, _, _, criterion = build(lm_data, TINY_TRANSFORMER + [
        "--criterion", "maligan_mixed", "--disc-path", str(disc_file),
    ])
    loaded = criterion.discriminator.state_dict()
    assert loaded.keys() == saved["model"].keys()
    assert all(torch.equal(loaded[k], saved["model"][k]) for k in loaded)


@pytest.mark.parametrize("tool", ["sample.py", "export_generator.py"])
def test_a_crafted_checkpoint_runs_no_code(maligan_checkpoint, tmp_path, tool):
    """fairseq eval()s adaptive_softmax_cutoff while building the model: the plugin's
    loaders refuse the file first, and the payload never runs."""
    marker = tmp_path / "payload-ran"
    state = torch.load(maligan_checkpoint, weights_only=True)
    state["cfg"]["model"]["adaptive_softmax_cutoff"] = (
        f"__import__('pathlib').Path({str(marker)!r}).touch() or [10]")
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    args = (["--path", str(crafted), "--num", "2", "--max-len", "5"] if tool == "sample.py"
            else [str(crafted), str(tmp_path / "out.pt")])
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / tool), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and not marker.exists()
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "cfg.model.adaptive_softmax_cutoff" in last and "not a literal" in last
    assert not (tmp_path / "out.pt").exists()


def test_pretrain_discriminator_keeps_the_d_with_the_lowest_valid_loss(
        lm_data, maligan_checkpoint, tmp_path):
    """Scored every 4 updates, stopped after 2 scores without a better one: the file is
    the best-scoring D (its valid loss, recomputed here, is the best one printed), not the
    last one trained."""
    import re

    from fairseq_maligan.criterions import max_target_positions
    from fairseq_maligan.discriminators import load_discriminator
    from fairseq_maligan.evaluation import discriminator_score, load_generator

    disc_file = tmp_path / "disc.pt"
    proc = script(
        "pretrain_discriminator.py", str(lm_data), "--generator", str(maligan_checkpoint),
        "--output", str(disc_file), "--disc-embed-dim", "8", "--disc-hidden-dim", "8",
        "--updates", "40", "--valid-interval", "4", "--patience", "2", "--lr", "0.05",
        "--max-tokens", "400", "--seed", "3",
    )
    scores = [(int(u), float(loss)) for u, loss in
              re.findall(r"update (\d+): valid loss ([\d.]+)", proc.stdout)]
    best_update, best_loss = min(scores, key=lambda score: score[1])
    assert [u for u, _ in scores] == list(range(4, 4 * len(scores) + 1, 4))
    last = proc.stdout.strip().splitlines()[-1]
    assert f"valid loss {best_loss:.4f} (best, update {best_update})" in last
    if scores[-1][0] < 40:  # stopped early: the patience ran out after the best score
        assert "stopping" in proc.stdout and scores[-1][0] - best_update == 2 * 4

    generator, task = load_generator(str(maligan_checkpoint), str(lm_data))
    disc = load_discriminator(str(disc_file), task.target_dictionary)
    loss, _ = discriminator_score(disc, generator, task, "valid", 400, 3,
                                  max_target_positions(task))
    assert loss == pytest.approx(best_loss, abs=1e-4)


def test_run_discriminator_is_the_d_the_run_saved(lm_data, maligan_checkpoint, tmp_path):
    """The held-out audit scores the D of the checkpoint's criterion state, weight for
    weight; a checkpoint without one (an exported generator) is a one-line error."""
    from fairseq_maligan.errors import ConfigError
    from fairseq_maligan.evaluation import load_generator, run_discriminator

    generator, task = load_generator(str(maligan_checkpoint), str(lm_data))
    disc, sample_max_len = run_discriminator(str(maligan_checkpoint), generator, task)
    saved = torch.load(maligan_checkpoint, weights_only=True)["criterion"]
    own = disc.state_dict()
    assert own and all(torch.equal(value, saved["discriminator." + key])
                       for key, value in own.items())
    assert not disc.training and sample_max_len is None
    exported = tmp_path / "generator.pt"
    script("export_generator.py", str(maligan_checkpoint), str(exported))
    with pytest.raises(ConfigError, match="holds no discriminator"):
        run_discriminator(str(exported), generator, task)
