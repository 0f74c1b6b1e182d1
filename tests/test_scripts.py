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
