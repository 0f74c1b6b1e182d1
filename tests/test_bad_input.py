"""Bad options stop with one line that names the option, not a traceback."""

import re
import subprocess
import sys

import pytest
import torch
from conftest import LM_DATA, PLUGIN, TINY_TRANSFORMER, build, make_oracle_dataset, run_cli

from fairseq_maligan.errors import ConfigError

ADVERSARIAL = ["--criterion", "maligan_mixed", "--optimizer", "maligan_adam", "--lr", "0.001",
               "--max-tokens", "400"]


@pytest.mark.parametrize(
    "options, named",
    [
        (["--num-samples", "0"], "--num-samples"),
        (["--prefix-decay", "-1"], "--prefix-decay"),
        (["--prefix-init", "-3"], "--prefix-init"),
        (["--prefix-init", "500"], "--prefix-init"),
        (["--prefix-decay-updates", "0"], "--prefix-decay-updates"),
        (["--disc-steps", "0"], "--disc-steps"),
        (["--criterion", "seqgan", "--rollout-max-rows", "0"], "--rollout-max-rows"),
        (["--num-samples", "1"], "--num-samples 1 with --baseline uniform"),
        (["--sample-break-mode", "none"], "use --sample-break-mode eos, not none"),
        (["--sample-break-mode", "complete"], "use --sample-break-mode eos, not complete"),
        (["--add-bos-token"], "--add-bos-token"),
        (["--sample-max-len", "0"], "--sample-max-len must be at least 1"),
        (["--sample-max-len", "2", "--prefix-init", "4"], "--sample-max-len 2 is shorter"),
        (["--disc-arch", "cnn_discriminator", "--disc-filter-sizes", "a,b"],
         "--disc-filter-sizes"),
        (["--disc-arch", "cnn_discriminator", "--disc-filter-sizes", "0"],
         "--disc-filter-sizes"),
        (["--disc-dropout", "1.0"], "--disc-dropout"),
        (["--disc-hidden-dim", "0"], "--disc-hidden-dim"),
        (["--disc-layers", "0"], "--disc-layers"),
        (["--mle-weight", "-1"], "--mle-weight"),
        (["--disc-lr", "nan"], "--disc-lr"),
        (["--disc-clip-norm", "-1"], "--disc-clip-norm"),
    ],
)
def test_bad_criterion_option_is_named(lm_data, options, named):
    with pytest.raises(ConfigError, match=named):
        build(lm_data, TINY_TRANSFORMER + ADVERSARIAL + options)


def test_unknown_disc_arch_is_named(lm_data, capsys):
    with pytest.raises(SystemExit):
        build(lm_data, TINY_TRANSFORMER + ADVERSARIAL + ["--disc-arch", "gpt_discriminator"])
    assert "--disc-arch" in capsys.readouterr().err


def test_missing_data_directory_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=str(missing)):
        build(missing, TINY_TRANSFORMER + ADVERSARIAL)


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


def test_target_longer_than_tokens_per_sample_is_named(lm_data):
    with pytest.raises(ConfigError, match="longer than --tokens-per-sample 5"):
        build(lm_data, TINY_TRANSFORMER + ADVERSARIAL + ["--tokens-per-sample", "5"])


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
    criterion.set_num_updates(0)
    loss, _, log = criterion(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and int(log["disc_fake_rows"]) == 6 * 4
    with pytest.raises(ConfigError, match="test split .* only empty lines"):
        task.load_dataset("test")


def test_checkpoint_with_another_dictionary_is_named(lm_data, tmp_path):
    other = make_oracle_dataset(tmp_path / "other", vocab=70, seq_len=6, train=40, valid=10)
    run_cli("train", [
        str(other), "--task", "language_modeling", *TINY_TRANSFORMER, *LM_DATA, "--cpu",
        "--optimizer", "adam", "--lr", "0.01", "--max-tokens", "400", "--max-update", "1",
        "--save-dir", str(tmp_path / "mle"),
    ])
    proc = run_cli("train", [
        str(lm_data), "--user-dir", PLUGIN, "--task", "maligan_language_modeling",
        *TINY_TRANSFORMER, *LM_DATA, *ADVERSARIAL, "--cpu", "--max-update", "1",
        "--finetune-from-model", str(tmp_path / "mle" / "checkpoint_last.pt"),
        "--save-dir", str(tmp_path / "adv"),
    ], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    found = re.search(r"error: .*checkpoint_last.pt was trained with a dictionary of (\d+) "
                      r"symbols, the data has (\d+)", proc.stderr.strip().splitlines()[-1])
    assert found and found.group(1) != found.group(2)


def test_disc_lr_needs_maligan_adam(lm_data, tmp_path):
    """Any other optimizer would silently train D at the generator's learning rate."""
    proc = run_cli("train", [
        str(lm_data), "--user-dir", PLUGIN, "--task", "maligan_language_modeling",
        *TINY_TRANSFORMER, *LM_DATA, *ADVERSARIAL, "--optimizer", "adam", "--cpu",
        "--max-update", "1", "--save-dir", str(tmp_path),
    ], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "needs --optimizer maligan_adam (got FairseqAdam)" in last


def test_importing_the_package_keeps_the_programs_excepthook():
    """Only entry points (fairseq tools, the scripts) print ConfigError as one line."""
    code = ("import sys; hook = sys.excepthook; import fairseq_maligan; "
            "print(sys.excepthook is hook)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "True"
