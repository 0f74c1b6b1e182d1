"""Bad options stop with one line that names the option, not a traceback."""

import subprocess
import sys

import pytest
import torch
from conftest import LM_DATA, PLUGIN, TINY_TRANSFORMER, build, run_cli

from fairseq_maligan.errors import ConfigError

ADVERSARIAL = ["--criterion", "maligan_mixed", "--optimizer", "maligan_adam", "--lr", "0.001",
               "--max-tokens", "400"]


def test_unknown_disc_arch_is_named(lm_data, capsys):
    with pytest.raises(SystemExit):
        build(lm_data, TINY_TRANSFORMER + ADVERSARIAL + ["--disc-arch", "gpt_discriminator"])
    assert "--disc-arch" in capsys.readouterr().err


def test_command_line_prints_one_line(lm_data, tmp_path):
    proc = run_cli("train", [
        str(lm_data), "--user-dir", PLUGIN, "--task", "maligan_language_modeling",
        *TINY_TRANSFORMER, *LM_DATA, *ADVERSARIAL, "--cpu", "--max-update", "1",
        "--save-dir", str(tmp_path), "--num-samples", "0",
    ], check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "fairseq-maligan: error: --num-samples must be at least 1, got 0"
    )


def test_unsupported_task_is_named():
    from fairseq.tasks import FairseqTask

    from fairseq_maligan.criterions import MaliganMixedConfig, MaliganMixedCriterion

    with pytest.raises(ConfigError, match="--criterion maligan_mixed .* not FairseqTask"):
        MaliganMixedCriterion(MaliganMixedConfig(_name="maligan_mixed"), FairseqTask(None))


def test_empty_lines_train_and_an_empty_split_is_named(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.txt").write_text("a b c\n\nb c\n\n\nc a b a\n" * 5)
    (raw / "valid.txt").write_text("a b\n\n")
    (raw / "test.txt").write_text("\n\n\n")
    run_cli("preprocess", [
        "--only-source", "--trainpref", str(raw / "train.txt"), "--validpref",
        str(raw / "valid.txt"), "--testpref", str(raw / "test.txt"),
        "--destdir", str(tmp_path / "bin"), "--workers", "1",
    ])
    _, task, model, criterion = build(
        tmp_path / "bin", TINY_TRANSFORMER + ADVERSARIAL + ["--prefix-init", "0"]
    )
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(6)])
    assert (batch["target"].ne(task.target_dictionary.pad()).sum(1) == 1).any()
    criterion.begin_update(0)
    loss, _, log = criterion(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and int(log["disc_fake_rows"]) == 6 * 4
    with pytest.raises(ConfigError, match="test split .* only empty lines"):
        task.load_dataset("test")


def test_importing_the_package_keeps_the_programs_excepthook():
    """Only entry points (fairseq tools, the scripts) print ConfigError as one line."""
    code = ("import sys; hook = sys.excepthook; import fairseq_maligan; "
            "print(sys.excepthook is hook)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "True"


def test_a_distributed_error_exits_before_the_backends_teardown(tmp_path):
    """In a distributed run the one-line error is the last thing printed: the process
    exits at once, so the collective backend's threads cannot print a C++ abort after it
    (nothing registered with atexit runs)."""
    code = (
        "import atexit, torch.distributed as dist\n"
        "from fairseq_maligan.errors import ConfigError, install_excepthook\n"
        "install_excepthook()\n"  # as fairseq-train does, before torch wraps the hook
        f"dist.init_process_group('gloo', init_method='file://{tmp_path}/store', "
        "rank=0, world_size=1)\n"
        "atexit.register(print, 'teardown ran')\n"
        "raise ConfigError('ranks disagree on --num-samples')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert "teardown ran" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "[rank0]: fairseq-maligan: error: ranks disagree on --num-samples")
