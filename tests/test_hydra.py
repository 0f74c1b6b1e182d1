"""The example hydra config runs with stock fairseq-hydra-train."""

import pytest
import torch
from conftest import PLUGIN, ROOT, run_cli


@pytest.mark.slow
def test_example_config_runs_with_fairseq_hydra_train(lm_data, tmp_path):
    run_cli("hydra_train", [
        "--config-dir", str(ROOT / "examples" / "synthetic_oracle" / "config"),
        "--config-name", "oracle_maligan_mixed", f"common.user_dir={PLUGIN}",
        f"task.data={lm_data}", f"checkpoint.save_dir={tmp_path}", "optimization.max_update=2",
        "criterion.disc_warmup_updates=0", "criterion.prefix_init=2",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ], cwd=tmp_path)
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 2
    assert state["optimizer_history"][-1]["criterion_name"] == "MaliganMixedCriterion"
    assert state["cfg"]["criterion"]["prefix_init"] == 2
    assert state["cfg"]["task"]["_name"] == "language_modeling"
    assert any(key.startswith("discriminator.") for key in state["criterion"])
