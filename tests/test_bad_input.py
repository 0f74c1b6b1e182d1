"""Bad options stop with one line that names the option, not a traceback."""

import pytest
from conftest import LM_DATA, PLUGIN, TINY_TRANSFORMER, build, run_cli

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
