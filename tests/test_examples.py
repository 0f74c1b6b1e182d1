"""The paper experiments of ``examples/``: each quick mode, run as a user would run it.

Each test runs one ``run.py --quick`` end to end (data from ``../shared/data``, or made or
bundled) and checks what its results must satisfy: every method continued the same MLE
checkpoint for exactly the budget's updates, the schedules that define MaliGAN-basic and
MaliGAN-full, metric ranges, and the files the README shows.
"""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GUARDED_ENV
from experiment import (
    AUDIT_KEYS,
    METHODS,
    Budget,
    Runner,
    best_is_stale,
    cached_result,
    checkpoint_updates,
    format_audit,
    interval_checkpoints,
    method_args,
    paired_differences,
    seed_summary,
)
from fairseq.data import Dictionary

from fairseq_maligan.criterions import prefix_length

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def run_example(name: str, out: Path, *extra: str) -> dict:
    """Run ``examples/<name>/run.py --quick`` into ``out``; its results.json."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name / "run.py"), "--quick", "--out", str(out),
         *extra],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **GUARDED_ENV},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def check_runs(out: Path, updates: int, stages: list[dict], disc_steps: int = 1) -> float:
    """Every method made exactly ``updates`` generator updates (an adversarial one
    ``disc_steps`` fairseq updates for each) from the same pretrained checkpoint and N
    stayed 0 for MaliGAN-basic; returns MaliGAN-full's N averaged over its updates."""
    commands = {s["stage"]: s["command"] for s in stages if s.get("seed", 1) == 1}
    for method in METHODS:
        steps = 1 if method == "mle" else disc_steps
        assert checkpoint_updates(out / method / "checkpoint_last.pt") == steps * updates, method
        pretrained = out / "pretrained" / "checkpoint_best.pt"
        assert f"--finetune-from-model {pretrained}" in commands[method], method
    basic = re.findall(r"prefix_len[ =](\d+)", (out / "logs" / "maligan_basic.log").read_text())
    full = re.findall(r"prefix_len[ =]([\d.]+)", (out / "logs" / "maligan_full.log").read_text())
    assert basic and set(basic) == {"0"}
    assert full and float(full[-1]) > 0
    return float(full[-1])


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_method_options_define_basic_and_full():
    basic = method_args("maligan_basic", _budget())
    full = method_args("maligan_full", _budget())
    assert basic[basic.index("--prefix-init") + 1] == "0"
    assert basic[basic.index("--prefix-decay") + 1] == "0"
    assert full[full.index("--prefix-init") + 1] == "12"
    assert method_args("mle", _budget())[:4] == ["--task", "language_modeling",
                                                 "--criterion", "cross_entropy"]
    seqgan = method_args("seqgan", _budget(), Path("disc.pt"))
    assert seqgan[seqgan.index("--disc-path") + 1] == "disc.pt"
    assert "--disc-path" not in method_args("mle", _budget(), Path("disc.pt"))
    with pytest.raises(ValueError, match="unknown method"):
        method_args("gan", _budget())


def test_budget_counts_generator_updates_with_k_discriminator_steps():
    """k = 3 and a warm-up of 4: 5 generator updates are 4 + 3 x 5 fairseq updates, and
    the criterion's own rule moves the generator on exactly 5 of them."""
    from fairseq_maligan.criterions import AdversarialCriterion

    budget = Budget(mle_epochs=1, mle_lr=0.01, max_tokens=100, updates=5, lr=1e-3,
                    disc_steps=3, disc_warmup_updates=4)
    assert budget.fairseq_updates("mle") == 5
    assert budget.fairseq_updates("maligan_full") == 19
    assert budget.fairseq_updates("seqgan", 2) == 10
    assert [budget.generator_updates("maligan_basic", u) for u in (0, 4, 6, 7, 10, 19)] \
        == [0, 0, 0, 1, 2, 5]
    assert budget.generator_updates("mle", 7) == 7

    class Schedule:
        cfg = type("Cfg", (), {"disc_warmup_updates": 4, "disc_steps": 3})()
        generator_moves = AdversarialCriterion.generator_moves

    moved = []
    for update in range(budget.fairseq_updates("maligan_full")):
        Schedule.num_updates = update
        moved.append(Schedule().generator_moves())
    assert sum(moved) == 5
    # After fairseq update u the generator has moved generator_updates(u) times.
    assert all(sum(moved[:u]) == budget.generator_updates("maligan_full", u)
               for u in range(20))
    full = method_args("maligan_full", budget)
    assert full[full.index("--disc-steps") + 1] == "3"
    assert full[full.index("--prefix-decay-updates") + 1] == "30"


def _budget():
    from experiment import Budget

    return Budget(mle_epochs=1, mle_lr=0.01, max_tokens=100, updates=2, lr=1e-3,
                  prefix_init=12)


def test_pretraining_runs_the_floor_then_stops_on_patience(lm_data, tmp_path):
    """MLE pretraining never stops before the published budget (here 2 epochs), then goes
    on with --patience; a rerun trains nothing more."""
    from conftest import TINY_LSTM
    from experiment import LMExperiment

    budget = Budget(mle_epochs=2, mle_lr=0.3, max_tokens=400, updates=1, lr=1e-3,
                    mle_patience=2, mle_max_epochs=12)  # a best 2 epochs old cannot be stale
    experiment = LMExperiment(tmp_path, TINY_LSTM, budget, tokens_per_sample=32)
    experiment.env.update(GUARDED_ENV)
    experiment.data = lm_data
    experiment.pretrain()
    assert [stage["stage"] for stage in experiment.stages] == [
        "pretrain_mle", "pretrain_mle_to_convergence"]
    summary = experiment.pretraining()
    assert experiment.stages[1]["pretraining"] == summary
    log = Path(experiment.stages[1]["log"]).read_text()
    assert summary["floor_epochs"] == 2 and 2 < summary["epochs"] < 12  # patience stopped it
    trained = sum(Path(stage["log"]).read_text().count("| train | epoch")
                  for stage in experiment.stages)
    assert summary["epochs"] == trained  # epochs completed, not the iterator's next one
    assert "early stop since valid performance hasn't improved for last 2 runs" in log
    assert summary["best_updates"] <= summary["updates"]
    experiment.pretrain()
    assert len(experiment.stages) == 2
    # A finished fine-tuning stage is kept: fairseq-train resumed at --max-update would
    # make one update more.
    pretrained = tmp_path / "pretrained" / "checkpoint_best.pt"
    for _ in range(2):
        experiment.finetune("mle", pretrained)
        assert checkpoint_updates(tmp_path / "mle" / "checkpoint_last.pt") == 1
    assert experiment.stages[-1]["kept"] and not experiment.stages[-2].get("kept")
    # Fine-tuning saves every resume_interval_updates generator updates, keeping only the
    # newest of those checkpoints: an interrupted stage resumes from there.
    resumable = LMExperiment(tmp_path / "resumable", TINY_LSTM,
                             replace(budget, max_tokens=100, updates=5), tokens_per_sample=32)
    resumable.data, resumable.resume_interval_updates = lm_data, 2
    resumable.finetune("mle", pretrained)
    assert [updates for updates, _ in interval_checkpoints(tmp_path / "resumable" / "mle")] == [4]


def test_best_is_stale_compares_the_epochs_of_best_and_last(tmp_path):
    def save(name: str, epoch: int) -> None:
        torch.save({"extra_state": {"train_iterator": {"epoch": epoch}}}, tmp_path / name)

    save("checkpoint_best.pt", 10)
    save("checkpoint_last.pt", 120)
    assert best_is_stale(tmp_path, 10)
    save("checkpoint_last.pt", 19)
    assert not best_is_stale(tmp_path, 10)
    assert best_is_stale(tmp_path, 9)


def test_cached_result_runs_once_per_budget(tmp_path):
    """Seeds and corpora run in parallel are gathered from their cached results."""
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"score": 0.5}

    budget = Budget.quick()
    path = tmp_path / "seed1" / "curves.json"
    first = cached_result(path, budget, compute)
    again = cached_result(path, budget, compute)
    assert first == again and first["score"] == 0.5 and len(calls) == 1
    with pytest.raises(SystemExit, match="another budget"):
        cached_result(path, Budget.quick(updates=budget.updates + 1), compute)
    assert len(calls) == 1


def test_synthetic_oracle_quick(tmp_path):
    results = run_example("synthetic_oracle", tmp_path)
    seed = tmp_path / "seed1"
    budget = results["budget"]
    assert budget["disc_steps"] == 2 and budget["disc_warmup_updates"] == 0
    mean_prefix = check_runs(seed, 6, results["stages"], disc_steps=2)
    # The schedule steps every prefix_decay_updates generator updates: 2 x 2 fairseq ones.
    schedule = [prefix_length(u, 21, budget["prefix_init"], budget["prefix_decay"],
                              2 * budget["prefix_decay_updates"], 0) for u in range(12)]
    assert schedule == [12] * 4 + [8] * 4 + [4] * 4 and mean_prefix == pytest.approx(8)
    full = next(s["command"] for s in results["stages"] if s["stage"] == "maligan_full")
    assert "--disc-steps 2" in full and "--prefix-decay-updates 4" in full
    assert "--max-update 12" in full and "--save-interval-updates 6" in full
    curves = results["curves"]["1"]
    start = curves["mle"][0]
    for method in METHODS:
        # Checkpoints every 3 generator updates, whatever the method's fairseq updates.
        assert [p["updates"] for p in curves[method]] == [0, 3, 6]
        assert curves[method][0] == start  # one pretrained model scored once for all
        for point in curves[method]:
            assert math.isfinite(point["nll_test"]) and point["nll_test"] > 0
        final, last = results["final"][method]["nll_oracle"]["mean"], curves[method][-1]
        # NaN where none of a barely trained model's samples is a valid oracle sequence
        assert final == last["nll_oracle"] or (math.isnan(final) and last["invalid"] == 1.0)
    # The oracle scores its own data better than any generator trained for seconds.
    assert results["oracle_nll_of_its_test_data"] < start["nll_oracle"]
    # SeqGAN's NLL-oracle scores every sample, so it is defined for every model.
    fixed = json.loads((seed / "seqgan_protocol.json").read_text())
    assert fixed["num_samples"] == results["seqgan_protocol_samples"] == 200
    for name in ("pretrained", *METHODS):
        row = results["pretrained"] if name == "pretrained" else results["final"][name]
        value = row["nll_oracle_fixed"]["mean"]
        assert math.isfinite(value) and value == fixed["nll_oracle_fixed"][name]
        assert results["oracle_nll_of_its_test_data"] < value
    assert results["pretraining"]["1"]["epochs"] == 3
    assert {r["name"] for r in results["sweep"]} == set(METHODS.values())
    # The discriminator was pretrained once and every adversarial run started from it.
    disc = seed / "discriminator.pt"
    assert disc.is_file()
    for method in ("seqgan", "maligan_basic", "maligan_full"):
        assert f"--disc-path {disc}" in next(
            s["command"] for s in results["stages"] if s["stage"] == method)
    for method in ("seqgan", "maligan_basic", "maligan_full"):
        paired = results["paired_minus_mle"]["nll_test"][method]
        final, mle = curves[method][-1]["nll_test"], curves["mle"][-1]["nll_test"]
        assert paired["differences"] == [pytest.approx(final - mle)]
    audit = {row["method"]: row for row in results["format_audit"]}
    assert set(audit) == {"seqgan", "maligan_basic", "maligan_full"}
    assert all(0 <= audit[m]["sample/eos_fake"] <= 1 for m in audit)
    assert all(0 <= audit[m]["disc/valid_acc"] <= 1 and audit[m]["disc/valid_loss"] > 0
               for m in audit)
    assert set(results["beyond_mle_temperatures"]) == set(METHODS.values()) - {"MLE"}
    assert set(results["past_mle_range"]) == set(METHODS.values()) - {"MLE"}
    check_png(tmp_path / "curves.png")
    check_png(tmp_path / "sweep.png")


def test_format_audit_reads_the_last_train_line():
    log = "\n".join([
        "x | INFO | train | epoch 001 | loss 2.1 | disc/acc_real 0.2 | sample/eos_fake 0.5",
        "x | INFO | valid | epoch 002 | disc/acc_real 0.9",
        "x | INFO | train | epoch 002 | loss 1.9 | disc/acc_real 0.601 | disc/acc_fake 0.765 "
        "| sample/len_real 21 | sample/eos_real 1 | sample/len_fake 24.739 | "
        "sample/eos_fake 0.98 | wall 12",
    ])
    assert format_audit(log) == {
        "disc/acc_real": 0.601, "disc/acc_fake": 0.765, "sample/eos_real": 1.0,
        "sample/eos_fake": 0.98, "sample/len_real": 21.0, "sample/len_fake": 24.739}
    assert format_audit("no training here") == {}


def test_paired_differences_by_hand():
    values = {1: {"mle": 5.0, "gan": 4.5, "other": 5.5},
              2: {"mle": 6.0, "gan": 5.0, "other": math.nan},
              3: {"mle": 4.0, "gan": 4.5, "other": 4.5}}
    paired = paired_differences(values)
    assert paired["gan"]["differences"] == [-0.5, -1.0, 0.5]
    assert paired["gan"]["mean"] == pytest.approx(-1 / 3)
    assert paired["gan"]["std"] == pytest.approx(math.sqrt(((1 / 6) ** 2 + (2 / 3) ** 2
                                                            + (5 / 6) ** 2) / 2))
    assert (paired["gan"]["below"], paired["gan"]["above"]) == (2, 1)
    assert paired["other"]["differences"] == [0.5, 0.5]  # seed 2 undefined: left out


def test_seed_summary_by_hand():
    per_seed = {1: {"mle": {"nll": 5.0, "bleu": 0.2}, "gan": {"nll": 4.0, "bleu": 0.3}},
                2: {"mle": {"nll": 7.0, "bleu": 0.4}, "gan": {"nll": 8.0, "bleu": math.nan}}}
    summary = seed_summary(per_seed, ("nll", "bleu"))
    assert summary["mean"]["mle"]["nll"] == {"mean": 6.0, "std": pytest.approx(math.sqrt(2)),
                                             "n": 2}
    assert summary["mean"]["gan"]["bleu"] == {"mean": 0.3, "std": 0.0, "n": 1}
    assert summary["paired_minus_mle"]["nll"]["gan"]["differences"] == [-1.0, 1.0]
    assert summary["paired_minus_mle"]["bleu"]["gan"]["differences"] == [pytest.approx(0.1)]
    assert set(summary["paired_minus_mle"]["nll"]) == {"gan"}


@pytest.mark.skipif(not (SHARED / "chinese-poems").is_dir(), reason="needs ../shared/data")
def test_poems_quick(tmp_path):
    results = run_example("poems", tmp_path)
    out = tmp_path / "poem5" / "seed1"
    check_runs(out, 6, results["poem5"]["stages"])
    splits = {s: (out / "raw" / f"{s}.txt").read_text().splitlines()
              for s in ("train", "valid", "test")}
    assert [len(v) for v in splits.values()] == [1700, 100, 200]  # 2,000 poems by i % 20
    assert all(len(line.split()) == 24 for lines in splits.values() for line in lines)
    for name, row in results["poem5"]["scores"]["1"].items():
        assert 0 < row["bleu2"] < 1 and 0 < row["self_bleu2"] < 1, name
        assert 1 < row["test_ppl"] < 2000, name
        assert results["poem5"]["mean"][name]["bleu2"]["mean"] == row["bleu2"]
    check_png(out / "sweep.png")


@pytest.mark.skipif(not (SHARED / "texygen").is_dir(), reason="needs ../shared/data")
def test_coco_quick(tmp_path):
    results = run_example("coco", tmp_path)
    check_runs(tmp_path / "seed1", 6, results["stages"])
    for name, row in results["scores"]["1"].items():
        bleus = [row[f"bleu{n}"] for n in (2, 3, 4, 5)]
        assert all(0 < b < 1 for b in bleus), name
        assert bleus == sorted(bleus, reverse=True), name  # higher orders match less
        assert len(row["examples"]) == 5
        assert row["self_bleu_samples"] == 100  # min(Texygen's 500, the quick 100 samples)
    assert {"Texygen MLE", "Texygen SeqGAN", "Texygen MaliGAN"} == set(
        results["published_texygen"])
    # The checkpoint every method continues is swept as a second baseline beside MLE.
    assert {r["name"] for r in results["sweeps"]["1"]} == {"MLE pretrained", *METHODS.values()}
    assert set(results["beyond_pretrained_temperatures"]["1"]) == set(METHODS.values())
    assert set(results["past_pretrained_range"]["1"]) == set(METHODS.values())
    check_png(tmp_path / "seed1" / "sweep.png")


@pytest.mark.skipif(not (SHARED / "ptb").is_dir(), reason="needs ../shared/data")
def test_in_lanes_runs_methods_at_once_and_keeps_their_order(tmp_path):
    both_running = threading.Barrier(2, timeout=10)  # broken unless two lanes run at once

    def work(method):
        if method in ("mle", "seqgan"):
            both_running.wait()
        return method.upper()

    assert Runner(tmp_path, jobs=2).in_lanes(work, list(METHODS)) == \
        [m.upper() for m in METHODS]
    started = []
    both_running.reset()

    def mle_fails(method):
        started.append(method)
        if method in ("mle", "seqgan"):
            both_running.wait()
        if method == "mle":
            sys.exit("mle failed")
        time.sleep(0.2)
        return method

    with pytest.raises(SystemExit, match="mle failed"):
        Runner(tmp_path, jobs=2).in_lanes(mle_fails, list(METHODS))
    assert sorted(started) == ["mle", "seqgan"]  # the rest never started
    with pytest.raises(SystemExit, match="--jobs"):
        Runner(tmp_path, jobs=0)


def log_times(log: Path) -> list[float]:
    """The timestamps of a fairseq log's lines, in seconds."""
    stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \|", log.read_text(), re.M)
    return [time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) for stamp in stamps]


def test_ptb_quick_stock_eval_lm(tmp_path):
    """Two methods fine-tune at once (--jobs 2); each adversarial stage still gets its own
    format audit."""
    from fairseq_maligan.evaluation import load_generator, nll_test

    results = run_example("ptb", tmp_path, "--jobs", "2")
    out = tmp_path / "seed1"
    check_runs(out, 6, results["stages"])
    assert log_times(out / "logs" / "seqgan.log")[0] <= log_times(out / "logs" / "mle.log")[-1]
    for row in results["format_audit"]:
        log = (out / "logs" / f"{row['method']}.log").read_text()
        assert {key: row[key] for key in AUDIT_KEYS if key in row} == format_audit(log)
        assert 0 <= row["disc/valid_acc"] <= 1
    assert {row["method"] for row in results["format_audit"]} == set(METHODS) - {"mle"}
    assert all(len(line.split()) <= 35
               for line in (out / "raw" / "train.txt").read_text().splitlines())
    stored = json.loads((out / "results.json").read_text())
    assert stored["removed_over_35_words"]["train"] > 0
    # Stock fairseq-eval-lm's figure is the in-process NLL of the same checkpoint.
    model, task = load_generator(str(out / "maligan_full" / "checkpoint_last.pt"),
                                 str(out / "data-bin"))
    stock = results["scores"]["1"]["maligan_full"]["test_ppl"]
    assert stock == pytest.approx(math.exp(nll_test(model, task, "test")), rel=1e-3)
    assert "--user-dir" not in next(s["command"] for s in results["stages"]
                                    if s["stage"] == "eval_maligan_full_test")


@pytest.mark.skipif(not (SHARED / "ptb").is_dir(), reason="needs ../shared/data")
def test_transformer_lm_quick_adaptive(tmp_path):
    """A stock transformer_lm with adaptive input and softmax: pretrained and continued
    with stock adaptive_loss, fine-tuned by every criterion, scored by stock
    fairseq-eval-lm (no --user-dir)."""
    results = run_example("transformer_lm", tmp_path)
    check_runs(tmp_path / "seed1", 6, results["stages"])
    commands = {s["stage"]: s["command"] for s in results["stages"]}
    for stage in ("pretrain_mle", "mle"):
        assert "--criterion adaptive_loss" in commands[stage]
    assert "--user-dir" not in commands["eval_maligan_full_test"]
    assert results["pretraining"]["1"]["epochs"] == 2
    for name in ("pretrained", *METHODS):
        assert 1 < results["scores"]["1"][name]["test_ppl"] < 3400  # below uniform over vocab
    check_png(tmp_path / "seed1" / "sweep.png")


def test_mnist_quick(tmp_path):
    results = run_example("mnist", tmp_path)
    assert results["seeds"] == [1]
    check_runs(tmp_path / "seed1", 6, results["stages"])
    scores = results["scores"]["1"]
    for name in ("pretrained", *METHODS):
        row = scores[name]
        # 64 binary pixels, 7 row marks and EOS cost at least nothing and at most
        # 72 * ln(vocabulary).
        assert 0 < row["test_nll_per_image"] < 72 * math.log(8)
        assert 0 <= row["invalid"] <= 1
        check_png(tmp_path / "seed1" / f"samples_{name}.png")
        # One seed: its figures are the mean, with no spread.
        assert results["mean"][name]["test_nll_per_image"] == {
            "mean": row["test_nll_per_image"], "std": 0.0, "n": 1}
    paired = results["paired_minus_mle"]["test_nll_per_image"]["maligan_full"]
    assert paired["differences"] == [pytest.approx(
        scores["maligan_full"]["test_nll_per_image"] - scores["mle"]["test_nll_per_image"])]
    assert {row["method"] for row in results["format_audit"]} == set(METHODS) - {"mle"}
    assert set(results["beyond_mle_temperatures"]["1"]) == set(METHODS.values()) - {"MLE"}
    assert set(results["past_mle_range"]["1"]) == set(METHODS.values()) - {"MLE"}
    check_png(tmp_path / "seed1" / "sweep.png")


def test_mnist_rows_to_images():
    spec = importlib.util.spec_from_file_location("mnist_run", ROOT / "examples/mnist/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.encode(np.array([1, 0, 0, 1]), 2) == "1 0 | 0 1"
    to_images = module.to_images
    dictionary = Dictionary()
    zero, one, mark = (dictionary.add_symbol(s) for s in ("0", "1", module.ROW_END))
    pad, eos = dictionary.pad(), dictionary.eos()
    rows = torch.tensor([
        [one, zero, mark, one, one, eos, pad],  # 2 lines of 2 pixels: valid
        [one, mark, zero, one, eos, pad, pad],  # short first line: padded, rest kept
        [zero, one, one, mark, one, zero, eos],  # long first line: cut, rest kept
        [one, one, mark, one, one, mark, one],  # a third line: dropped
        [one, one, eos, pad, pad, pad, pad],  # one line only: the second stays 0
    ])
    images, invalid = to_images(rows, dictionary, 2)
    assert images.tolist() == [[1, 0, 1, 1], [1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1],
                               [1, 1, 0, 0]]
    assert invalid == pytest.approx(4 / 5)
    assert images.dtype == np.uint8


@pytest.mark.skipif(not (SHARED / "multi30k").is_dir(), reason="needs ../shared/data/multi30k")
def test_translation_quick_resumes_and_refuses_other_sizes(tmp_path):
    """Every method continues the same MLE start for its updates and is scored with its
    bootstrap interval and sweep; a second run in the same --out keeps every finished
    stage (no stage trains again, every checkpoint is the same file); other settings
    there are refused in one line."""
    small = ["--mle-updates", "30", "--finetune-updates", "4", "--methods", "mle",
             "maligan_full"]
    first = run_example("translation", tmp_path, *small)
    took = first["pretraining"]["1"]
    assert took["updates"] == 30 and took["floor_epochs"] == 4
    scores = first["scores"]["1"]
    assert {name: row["updates"] for name, row in scores.items()} == {
        "pretrained": 30, "mle": 4, "maligan_full": 4}
    for row in scores.values():
        low, high = row["bleu_ci"]
        assert low <= row["bleu"] <= high or row["bleu"] == low == high == 0
    assert {(r["name"], r["temperature"]) for r in first["sweeps"]["1"]} == {
        ("MLE", 1.0), ("MaliGAN-full", 1.0)}
    assert set(first["paired_minus_mle"]["bleu"]) == {"pretrained", "maligan_full"}
    audit = {row["method"]: row for row in first["format_audit"]}
    assert set(audit) == {"maligan_full"} and 0 <= audit["maligan_full"]["disc/valid_acc"] <= 1
    # Fine-tuning stages (200 updates in full mode: less than an epoch) save every 20
    # updates, so an interrupted one resumes from its last 20 rather than from scratch.
    for stage in first["stages"]:
        if stage["stage"] in ("mle", "maligan_full"):
            assert "--save-interval-updates 20 --keep-interval-updates 1" in stage["command"]
    seed = tmp_path / "seed1"
    checkpoints = [seed / "pretrained" / "checkpoint_best.pt",
                   *(seed / stage / "checkpoint_last.pt"
                     for stage in ("pretrained", "mle", "maligan_full"))]
    before = [path.read_bytes() for path in checkpoints]
    second = run_example("translation", tmp_path, *small, "--stop-after", "finetune")
    assert [s["stage"] for s in second["stages"] if not s.get("kept")] == []
    assert second["pretraining"]["1"] == took
    # fairseq-train resumed at --max-update would have made one update more
    assert [path.read_bytes() for path in checkpoints] == before
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "translation" / "run.py"), "--quick",
         "--out", str(tmp_path), *small[2:], "--mle-updates", "31"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "holds a run with other settings (mle_max_updates); remove it or choose another --out")
