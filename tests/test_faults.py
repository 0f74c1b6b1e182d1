"""Faults: a truncated checkpoint_last.pt, a full disk, a second run on a busy --save-dir,
non-finite parameters and a run of non-finite losses."""

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from conftest import LM_DATA, PLUGIN, TINY_TRANSFORMER, build, first_batch, run_cli
from fairseq import checkpoint_utils, optim
from fairseq.file_io import PathManager
from fairseq.trainer import Trainer

from fairseq_maligan.errors import ConfigError, TrainingError
from fairseq_maligan.patches import lock_save_dir

ADVERSARIAL = ["--criterion", "maligan_mixed", "--optimizer", "maligan_adam", "--lr", "0.001",
               "--max-tokens", "400", "--prefix-init", "0", "--prefix-decay", "0",
               "--num-samples", "2"]


def train(data: Path, save_dir: Path, *extra: str, check: bool = True):
    return run_cli("train", [
        str(data), "--user-dir", PLUGIN, "--task", "maligan_language_modeling",
        *TINY_TRANSFORMER, *LM_DATA, *ADVERSARIAL, "--cpu", "--save-dir", str(save_dir),
        "--disable-validation", "--log-format", "simple", "--log-interval", "1", *extra,
    ], check=check)


def num_updates(path: Path) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["optimizer_history"][-1]["num_updates"]


def test_truncated_last_checkpoint_falls_back_to_the_newest_that_loads(lm_data, tmp_path):
    save_dir = tmp_path / "run"
    train(lm_data, save_dir, "--max-update", "2", "--save-interval-updates", "1",
          "--keep-interval-updates", "-1", "--no-epoch-checkpoints")
    last = save_dir / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:3000])
    proc = train(lm_data, save_dir, "--max-update", "3", "--save-interval-updates", "1",
                 "--keep-interval-updates", "-1", "--no-epoch-checkpoints")
    log = proc.stdout + proc.stderr
    assert f"{last} does not load" in log and "is truncated" in log
    assert "resuming from" in log and "checkpoint_1_2.pt" in log.split("resuming from")[1][:200]
    assert num_updates(last) == 3


def test_write_that_fills_the_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    """Simulated ENOSPC at the write (a machine that cannot mount a small file system)."""
    target = tmp_path / "checkpoint_last.pt"
    torch.save({"good": torch.ones(2)}, target)

    def full(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(TrainingError, match="the disk is full: .*checkpoint_last.pt could not"):
        checkpoint_utils.torch_persistent_save({"new": 1}, str(target))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_last.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["good"], torch.ones(2))

    monkeypatch.setattr("shutil.copyfile", lambda src, dst: (Path(dst).write_bytes(b"x"),
                                                            full(None, open(os.devnull, "wb"))))
    with pytest.raises(TrainingError, match="the disk is full"):
        PathManager.copy(str(target), str(tmp_path / "copy.pt"), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_last.pt"]


ON_DISK = ["--save-interval-updates", "1", "--keep-interval-updates", "1",
           "--no-epoch-checkpoints", "--no-kl-reference"]


@pytest.fixture
def small_disk(lm_data, tmp_path):
    """A tmpfs that holds two checkpoints and a half, where the machine allows mounting
    one (root, no sandbox)."""
    train(lm_data, tmp_path / "probe", "--max-update", "1", *ON_DISK)
    size = (tmp_path / "probe" / "checkpoint_last.pt").stat().st_size * 5 // 2
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a small file system here; the simulated test covers it")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_stops_with_one_line_and_the_run_resumes(lm_data, tmp_path, small_disk):
    save_dir = small_disk / "run"
    proc = train(lm_data, save_dir, "--max-update", "50", *ON_DISK, check=False)
    assert proc.returncode != 0
    last_line = proc.stderr.strip().splitlines()[-1]
    assert "the disk is full" in last_line and "Traceback" not in proc.stderr[-2000:]
    assert not [name for name in os.listdir(save_dir) if name.endswith(".tmp")]
    saved = num_updates(save_dir / "checkpoint_last.pt")
    assert saved >= 1
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    train(lm_data, save_dir, "--max-update", str(saved + 1), *ON_DISK)
    assert num_updates(save_dir / "checkpoint_last.pt") == saved + 1


def test_busy_save_dir_is_refused_and_a_killed_holder_leaves_no_stale_lock(lm_data, tmp_path):
    save_dir = tmp_path / "busy"
    save_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fairseq_maligan.patches import "
         "lock_save_dir; h = lock_save_dir(sys.argv[1]); print('locked', flush=True); "
         "time.sleep(600)", str(save_dir)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = train(lm_data, save_dir, "--max-update", "1", check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert (f"--save-dir {save_dir} is in use by a running training (pid {holder.pid})"
                in proc.stderr.strip().splitlines()[-1])
    finally:
        holder.kill()
        holder.wait()
    handle = lock_save_dir(str(save_dir))  # the kernel dropped the dead holder's lock
    with pytest.raises(ConfigError, match="is in use"):
        lock_save_dir(str(save_dir))
    handle.close()


def saved_trainer(lm_data: Path, save_dir: Path) -> tuple[Trainer, Path]:
    """A fairseq Trainer built in this process and the checkpoint it has just written."""
    cfg, task, model, criterion = build(lm_data, TINY_TRANSFORMER + ADVERSARIAL +
                                        ["--save-dir", str(save_dir)])
    trainer = Trainer(cfg, task, model, criterion)
    trainer.consolidate_optimizer()
    target = save_dir / "checkpoint_last.pt"
    trainer.save_checkpoint(str(target), {})
    return trainer, target


def test_non_finite_parameters_are_never_saved(lm_data, tmp_path):
    trainer, target = saved_trainer(lm_data, tmp_path)
    criterion = trainer.get_criterion()
    assert target.is_file()
    good = target.read_bytes()
    with torch.no_grad():
        next(criterion.discriminator.parameters())[0].fill_(float("nan"))
    with pytest.raises(TrainingError, match="the criterion's parameter discriminator.* is not "
                       "finite at update 0: nothing is saved"):
        trainer.save_checkpoint(str(target), {})
    assert target.read_bytes() == good and sorted(os.listdir(tmp_path)) == [target.name]


@pytest.mark.parametrize("branch", ["adversarial", "mle_only"])
def test_a_run_of_non_finite_losses_stops_the_run(lm_data, monkeypatch, branch):
    """Each non-finite step is skipped; --max-skipped-updates of them in a row stop the run.
    The MLE-only step (no row longer than N) has the same guard."""
    extra = ["--max-skipped-updates", "3"]
    if branch == "mle_only":
        extra += ["--prefix-init", "30"]
    cfg, task, model, criterion = build(lm_data, TINY_TRANSFORMER + ADVERSARIAL + extra)
    params = [p for p in (*model.parameters(), *criterion.parameters()) if p.requires_grad]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    sample = first_batch(task)
    monkeypatch.setattr(criterion, "mle_loss", lambda model, sample: (
        torch.tensor(float("nan"), requires_grad=True), 1))
    monkeypatch.setattr(criterion.discriminator, "forward",
                        lambda tokens, src_tokens=None: torch.full((tokens.size(0),), float("nan")))
    for update in range(2):
        _, _, log = task.train_step(sample, model, criterion, optimizer, update)
        assert log["skipped_updates"] == 1
    with pytest.raises(TrainingError, match="3 steps in a row had a non-finite loss "
                       r"\(last: nan at update 2\): stopping \(--max-skipped-updates 3\)"):
        task.train_step(sample, model, criterion, optimizer, 2)


def test_resuming_on_another_number_of_ranks_warns(lm_data, tmp_path, caplog):
    trainer, target = saved_trainer(lm_data, tmp_path)
    state = torch.load(target, weights_only=True)
    assert state["extra_state"]["world_size"] == 1
    trainer.load_checkpoint(str(target))
    assert "saved by a run on" not in caplog.text
    state["extra_state"]["world_size"] = 4
    torch.save(state, target)
    trainer.load_checkpoint(str(target))
    assert (f"{target} was saved by a run on 4 ranks, this one has 1: the run resumes, but "
            "the order in which batches are drawn changes") in caplog.text
