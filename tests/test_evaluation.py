"""Evaluation: in-process NLL-test equals stock fairseq-eval-lm, temperature, the scripts."""

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import LM_DATA, PLUGIN, ROOT, TINY_LSTM, run_cli
from fairseq.data import Dictionary

from fairseq_maligan.errors import ConfigError
from fairseq_maligan.evaluation import (
    baseline_quality_at,
    beyond_baseline,
    detokenize,
    evaluate_generator,
    fixed_length_rows,
    load_generator,
    nll_oracle,
    nll_test,
    past_baseline_range,
    sample_rows,
)
from fairseq_maligan.metrics import ReferenceBLEU, self_bleu
from fairseq_maligan.oracle import Oracle, oracle_symbol

SINGLE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models: threads only add contention


@pytest.fixture(scope="module")
def checkpoint(lm_data, tmp_path_factory) -> str:
    """A tiny lstm_lm trained by MLE long enough to end its sentences properly."""
    save_dir = tmp_path_factory.mktemp("eval_generator")
    run_cli("train", [
        str(lm_data), "--user-dir", PLUGIN, "--task", "language_modeling", *TINY_LSTM,
        *LM_DATA, "--cpu", "--max-tokens", "400", "--seed", "7", "--num-workers", "0",
        "--optimizer", "adam", "--lr", "0.03", "--max-update", "150",
        "--disable-validation", "--save-interval", "1000", "--log-format", "simple",
        "--save-dir", str(save_dir),
    ], env=SINGLE_THREAD)
    return str(save_dir / "checkpoint_last.pt")


@pytest.fixture(scope="module")
def generator(checkpoint, lm_data):
    return load_generator(checkpoint, str(lm_data))


def run_script(name: str, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **SINGLE_THREAD},
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_nll_test_equals_stock_eval_lm(lm_data, checkpoint, generator):
    # fairseq-eval-lm reads the split with its own --sample-break-mode (default "none":
    # 32-token blocks across sentences); give it the training mode, which nll_test uses.
    proc = run_cli("eval_lm", [
        str(lm_data), "--path", checkpoint, "--gen-subset", "test", "--cpu",
        "--sample-break-mode", "eos", "--tokens-per-sample", "32", "--max-tokens", "400",
    ], env=SINGLE_THREAD)
    stock_bits = float(re.search(r"Loss \(base 2\): ([0-9.]+)", proc.stdout + proc.stderr)[1])
    model, task = generator
    assert nll_test(model, task, "test") == pytest.approx(stock_bits * math.log(2), abs=1e-3)
    assert not model.training


def test_temperature_away_from_one_raises_nll_test(generator):
    model, task = generator
    at_one = nll_test(model, task, "test", temperature=1.0)
    # T -> infinity flattens the softmax to uniform: NLL -> ln |V| exactly, which a
    # trained model beats. T -> 0 puts all mass on the argmax: every test token that is
    # not the model's first choice costs (max logit - its logit) / T, unbounded.
    uniform = nll_test(model, task, "test", temperature=1e6)
    assert uniform == pytest.approx(math.log(len(task.target_dictionary)), abs=1e-4)
    assert at_one < nll_test(model, task, "test", temperature=20.0) < uniform
    assert nll_test(model, task, "test", temperature=0.05) > at_one + 1.0


def test_nll_oracle_of_the_oracle_data(lm_data, generator):
    _, task = generator
    dictionary = task.target_dictionary
    raw = lm_data.parent / "raw"
    oracle = Oracle.load(str(raw / "oracle.pt"))
    lines = (raw / "test.txt").read_text().splitlines()
    rows = torch.stack([dictionary.encode_line(line, add_if_not_exist=False) for line in lines])
    nll, invalid = nll_oracle(oracle, rows, dictionary)
    ids = torch.tensor([[int(word[1:]) for word in line.split()] for line in lines])
    assert invalid == 0.0
    assert nll == pytest.approx(float(oracle.nll(ids).mean()), rel=1e-6)
    half_invalid = rows.clone()
    half_invalid[::2, 3] = dictionary.eos()  # ends too early: unscorable
    assert nll_oracle(oracle, half_invalid, dictionary)[1] == pytest.approx(0.5)


def test_nll_oracle_fixed_scores_every_sample_at_the_oracle_length(lm_data, generator):
    """SeqGAN's protocol: samples of exactly the oracle's length (EOS banned while drawn),
    all of them scored; the value is the oracle's mean NLL of exactly those rows."""
    model, task = generator
    dictionary = task.target_dictionary
    oracle = Oracle.load(str(lm_data.parent / "raw" / "oracle.pt"))
    rows = fixed_length_rows(model, 64, oracle.seq_len, seed=3)
    assert rows.shape == (64, oracle.seq_len + 1)
    assert rows[:, -1].eq(dictionary.eos()).all()
    assert not rows[:, :-1].eq(dictionary.eos()).any()
    assert not rows.eq(dictionary.pad()).any()
    nll, invalid = nll_oracle(oracle, rows, dictionary)
    assert invalid == 0.0
    ids = oracle.ids_for(dictionary)[rows[:, :-1]]
    assert nll == pytest.approx(float(oracle.nll(ids).mean()), rel=1e-6)
    metrics = evaluate_generator(model, task, num_samples=64, max_len=oracle.seq_len + 1,
                                 seed=3, split=None, oracle=oracle)
    assert metrics["nll_oracle_fixed"] == pytest.approx(nll, rel=1e-6)


def test_oracle_invalid_counts_every_row_not_exactly_oracle_length():
    oracle = Oracle(vocab_size=5, seq_len=4, embed_dim=4, hidden_dim=4)
    dictionary = Dictionary()
    for index in range(5):
        dictionary.add_symbol(oracle_symbol(index))
    other = dictionary.add_symbol("other")
    eos, pad = dictionary.eos(), dictionary.pad()
    w = [dictionary.index(oracle_symbol(i)) for i in range(5)]
    rows = torch.tensor([
        [w[1], w[2], w[3], w[4], eos, pad],  # exactly the oracle length, then EOS: valid
        [w[0], w[0], w[1], w[1], eos, pad],  # valid
        [w[1], w[2], w[3], eos, pad, pad],  # ends early
        [w[1], w[2], w[3], w[4], w[0], eos],  # runs on past the length
        [w[1], w[2], w[3], w[4], w[0], w[1]],  # no EOS at all
        [w[1], other, w[3], w[4], eos, pad],  # a non-oracle symbol
    ])
    table = oracle.ids_for(dictionary)
    scores = oracle.score_rows(rows, table)
    valid_ids = torch.tensor([[1, 2, 3, 4], [0, 0, 1, 1]])
    assert oracle.valid_rows(table[rows]).tolist() == [True, True, False, False, False, False]
    assert scores["oracle_invalid_rows"] == 4 and scores["oracle_rows"] == 6
    assert scores["oracle_tokens"] == 8
    assert float(scores["oracle_nll_sum"]) == pytest.approx(float(oracle.nll(valid_ids).sum()))
    nll, invalid = nll_oracle(oracle, rows, dictionary)
    assert invalid == pytest.approx(4 / 6)
    assert nll == pytest.approx(float(oracle.nll(valid_ids).mean()))
    # rows of exactly the oracle length have no room for EOS: none is valid
    nll, invalid = nll_oracle(oracle, rows[:2, :4], dictionary)
    assert invalid == 1.0 and math.isnan(nll)


def test_missing_checkpoint_is_a_config_error(tmp_path):
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(ConfigError, match=re.escape(missing)):
        load_generator(missing)


def test_sample_script_writes_n_sentences(lm_data, checkpoint, generator, tmp_path):
    output = tmp_path / "samples.txt"
    run_script("sample.py", [
        "--path", checkpoint, "--data", str(lm_data), "--num", "100", "--max-len", "20",
        "--temperature", "0.9", "--seed", "3", "--output", str(output),
    ])
    lines = output.read_text().splitlines()
    model, task = generator
    dictionary = task.target_dictionary
    assert len(lines) == 100
    assert all(line.strip() for line in lines)
    specials = {dictionary[i] for i in (dictionary.pad(), dictionary.eos(), dictionary.bos())}
    for line in lines:
        for token in line.split():
            assert dictionary.index(token) != dictionary.unk() and token not in specials
    # the same sentences as drawn in-process from the same seed
    assert lines == detokenize(sample_rows(model, 100, 20, 0.9, seed=3), dictionary)


def test_temperature_sweep_script_oracle_mode(lm_data, checkpoint, tmp_path):
    records_path, plot_path = tmp_path / "sweep.json", tmp_path / "sweep.png"
    run_script("temperature_sweep.py", [
        "--path", checkpoint, checkpoint, "--name", "a", "b", "--data", str(lm_data),
        "--oracle", str(lm_data.parent / "raw" / "oracle.pt"), "--temperatures", "0.7", "1.0",
        "--num-samples", "50", "--output-json", str(records_path),
        "--output-plot", str(plot_path),
    ])
    records = json.loads(records_path.read_text())
    assert sorted((r["name"], r["temperature"]) for r in records) == [
        ("a", 0.7), ("a", 1.0), ("b", 0.7), ("b", 1.0)
    ]
    for record in records:
        assert record["quality"] == record["nll_oracle_fixed"] > 0
        assert record["nll_oracle"] > 0
        assert record["diversity"] == record["nll_test"] > 0
    by_point = {(r["name"], r["temperature"]): r for r in records}
    assert by_point["a", 0.7] == {**by_point["b", 0.7], "name": "a"}  # same seed, same draws
    assert plot_path.read_bytes().startswith(b"\x89PNG")


def test_temperature_sweep_script_references_mode(lm_data, checkpoint, tmp_path):
    records_path = tmp_path / "sweep.json"
    proc = run_script("temperature_sweep.py", [
        "--path", checkpoint, "--name", "a", "--data", str(lm_data),
        "--references", str(lm_data.parent / "raw" / "test.txt"), "--temperatures", "1.0",
        "--num-samples", "30", "--max-order", "3", "--tokenize", "none",
        "--self-bleu-samples", "20", "--output-json", str(records_path),
    ])
    (record,) = json.loads(records_path.read_text())
    assert record["tokenize"] == "none" and record["self_bleu_samples"] == 20
    assert record["quality"] == record["bleu3"] and record["diversity"] == record["self_bleu3"]
    assert proc.stdout.splitlines()[-1] == "tokenize=none, self_bleu_samples=20"


def test_evaluate_script_with_references(lm_data, checkpoint, generator, tmp_path):
    output = tmp_path / "results.json"
    proc = run_script("evaluate.py", [
        "--path", checkpoint, "--name", "mle", "--data", str(lm_data),
        "--references", str(lm_data.parent / "raw" / "test.txt"), "--num-samples", "100",
        "--self-bleu-samples", "40", "--output", str(output),
    ])
    assert proc.stdout.splitlines()[2].startswith("mle ")
    assert proc.stdout.splitlines()[3] == "tokenize=nltk, self_bleu_samples=40"
    (result,) = json.loads(output.read_text())["results"]
    assert result["tokenize"] == "nltk" and result["self_bleu_samples"] == 40
    model, task = generator
    lines = detokenize(sample_rows(model, 100, 50, seed=1), task.target_dictionary)
    assert result["self_bleu3"] == pytest.approx(self_bleu(lines[:40], 3), abs=1e-12)
    assert result["self_bleu3"] != pytest.approx(self_bleu(lines, 3), abs=1e-6)
    for order in (2, 3, 4, 5):
        assert 0.0 <= result[f"bleu{order}"] <= 1.0
        assert 0.0 <= result[f"self_bleu{order}"] <= 1.0
        for name in (f"bleu{order}", f"self_bleu{order}"):
            low, high = result[f"{name}_ci"]
            assert low < result[name] < high  # 100 varied samples: a real interval
    assert result["bleu2"] > result["bleu5"]
    assert result["nll_test"] == pytest.approx(nll_test(*generator, "test"), abs=1e-9)
    assert result["perplexity"] == pytest.approx(math.exp(result["nll_test"]))
    assert "nll_oracle" not in result


def test_self_bleu_samples_default_and_bounds(lm_data, generator):
    model, task = generator
    bleus = {2: ReferenceBLEU((lm_data.parent / "raw" / "test.txt").read_text().splitlines(),
                              2, "none")}
    metrics = evaluate_generator(model, task, num_samples=30, max_len=20, split=None,
                                 bleus=bleus)
    assert metrics["tokenize"] == "none" and metrics["self_bleu_samples"] == 30
    lines = detokenize(sample_rows(model, 30, 20), task.target_dictionary)
    assert metrics["self_bleu2"] == pytest.approx(self_bleu(lines, 2, "none"), abs=1e-12)
    with pytest.raises(ConfigError, match="self-bleu-samples"):
        evaluate_generator(model, task, num_samples=30, max_len=20, split=None, bleus=bleus,
                           self_bleu_samples=31)


def test_beyond_baseline_by_hand():
    """Oracle axes (both lower is better) and BLEU axes (quality upwards)."""
    def point(name, temperature, quality, diversity, metrics=("nll_oracle", "nll_test")):
        return {"name": name, "temperature": temperature, "quality": quality,
                "diversity": diversity, "quality_metric": metrics[0],
                "diversity_metric": metrics[1]}

    records = [point("MLE", 0.7, 8.0, 7.5), point("MLE", 1.0, 9.0, 7.0),
               point("GAN", 0.7, 8.2, 7.3),   # below the line joining the MLE points
               point("GAN", 1.0, 9.5, 7.2),   # worse than MLE at T = 1.0 on both
               point("GAN", 1.5, math.nan, 6.0),  # no valid sample: not on the plane
               point("MLE", 1.5, math.nan, 5.0)]  # covers nothing
    assert beyond_baseline(records, "MLE") == {"GAN": [0.7]}
    bleu = ("bleu4", "self_bleu4")
    records = [point("MLE", 1.0, 0.30, 0.40, bleu), point("GAN", 1.0, 0.35, 0.45, bleu),
               point("GAN", 0.8, 0.28, 0.50, bleu)]
    assert beyond_baseline(records, "MLE") == {"GAN": [1.0]}
    with pytest.raises(ConfigError, match="baseline 'mle'"):
        beyond_baseline(records, "mle")


def test_beyond_baseline_joins_neighbouring_temperatures():
    """A point on the straight line between two MLE temperatures is reached by MLE (at a
    temperature in between), though neither endpoint covers it on both axes."""
    def point(name, temperature, quality, diversity):
        return {"name": name, "temperature": temperature, "quality": quality,
                "diversity": diversity, "quality_metric": "nll_oracle",
                "diversity_metric": "nll_test"}

    mle = [point("MLE", 0.7, 8.0, 7.5), point("MLE", 1.0, 9.0, 7.0), point("MLE", 1.2, 9.6, 7.0)]
    on_line = point("GAN", 0.8, 8.5, 7.25)     # the midpoint of the first segment
    behind = point("GAN", 0.9, 8.6, 7.3)       # worse than the point at t = 0.5 on both axes
    ahead = point("GAN", 1.0, 8.5, 7.2)        # better than the line at either quality
    beyond_range = point("GAN", 1.5, 10.0, 6.9)  # more diverse than any MLE temperature
    records = [*mle, on_line, behind, ahead, beyond_range]
    assert beyond_baseline(records, "MLE") == {"GAN": [1.0, 1.5]}
    # Only the point inside MLE's swept diversity (7.0..7.5) beats its curve; the other
    # is past the range, where a hotter MLE may reach it.
    assert past_baseline_range(records, "MLE") == {"GAN": [1.5]}
    less_diverse = point("GAN", 0.5, 7.5, 7.8)  # beyond, and less diverse than MLE at 0.7
    assert past_baseline_range([*mle, ahead, less_diverse], "MLE") == {"GAN": [0.5]}
    # Between T = 1.0 and 1.2 MLE's diversity stays 7.0: (9.3, 7.0) is on that segment.
    assert beyond_baseline([*mle, point("GAN", 1.1, 9.3, 7.0)], "MLE") == {"GAN": []}
    # A segment next to a temperature without a valid value is not drawn.
    broken = [point("MLE", 0.7, 8.0, 7.5), point("MLE", 0.85, math.nan, 7.3),
              point("MLE", 1.0, 9.0, 7.0), on_line]
    assert beyond_baseline(broken, "MLE") == {"GAN": [0.8]}


def test_baseline_quality_at_a_diversity_by_hand():
    def point(name, temperature, quality, diversity, metric="bleu4"):
        return {"name": name, "temperature": temperature, "quality": quality,
                "diversity": diversity, "quality_metric": metric,
                "diversity_metric": "self_bleu4"}

    mle = [point("MLE", 0.7, 0.30, 0.60), point("MLE", 1.0, 0.15, 0.30),
           point("MLE", 1.2, 0.10, 0.20), point("GAN", 1.0, 0.5, 0.45)]
    assert baseline_quality_at(mle, "MLE", 0.45) == pytest.approx(0.225)  # halfway 0.7-1.0
    assert baseline_quality_at(mle, "MLE", 0.20) == pytest.approx(0.10)   # an endpoint
    assert math.isnan(baseline_quality_at(mle, "MLE", 0.70))  # beyond the swept range
    # A curve that turns back reaches a diversity twice: the better quality counts.
    turning = [point("MLE", 0.7, 8.0, 7.5, "nll_oracle"), point("MLE", 1.0, 9.0, 7.0, "nll_oracle"),
               point("MLE", 1.2, 9.4, 7.4, "nll_oracle")]
    assert baseline_quality_at(turning, "MLE", 7.4) == pytest.approx(8.2)


def test_classifier_confidence_improves_upwards():
    """MNIST's sweep: quality is a classifier's confidence (higher is better), diversity
    the test NLL (lower is better)."""
    def point(name, temperature, confidence, nll):
        return {"name": name, "temperature": temperature, "quality": confidence,
                "diversity": nll, "quality_metric": "classifier_confidence",
                "diversity_metric": "test_nll_per_image"}

    sweep = [point("MLE", 0.7, 0.78, 34.0), point("MLE", 1.0, 0.76, 32.0),
             point("GAN", 1.0, 0.80, 33.0), point("Worse", 1.0, 0.75, 33.0)]
    assert beyond_baseline(sweep, "MLE") == {"GAN": [1.0], "Worse": []}
    assert baseline_quality_at(sweep, "MLE", 33.0) == pytest.approx(0.77)


def test_sweep_summary_reads_nested_sweeps(tmp_path):
    """One row per adversarial model of every sweep in the files, nested ones included."""
    def point(name, temperature, quality, diversity):
        return {"name": name, "temperature": temperature, "quality": quality,
                "diversity": diversity, "quality_metric": "bleu4",
                "diversity_metric": "self_bleu4"}

    sweep = [point("MLE", 0.7, 0.30, 0.60), point("MLE", 1.0, 0.15, 0.30),
             {**point("GAN", 1.0, 0.25, 0.45), "bleu4_ci": [0.21, 0.29],
              "self_bleu4_ci": [0.40, 0.50]},
             point("Other", 1.0, 0.20, 0.45)]
    results = tmp_path / "poems" / "results" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"poem5": {"sweep": sweep}, "budget": {"updates": 1},
                                   "poem7": {"sweeps": {"2": sweep[:3]}}}))
    lines = run_script("sweep_summary.py", [str(results)]).stdout.splitlines()
    rows = [line for line in lines if line.startswith("| poems/poem")]
    # MLE at self-BLEU-4 0.45 (halfway between its two points) has BLEU-4 0.225; at the
    # ends of GAN's self-BLEU-4 interval, 0.40 and 0.50, it has 0.200 and 0.250.
    assert rows == [
        "| poems/poem5 | bleu4 / self_bleu4 | GAN | 0.250 / 0.450 | 0.210..0.290 | 0.225 "
        "| 0.200..0.250 | yes, T = 1.0 |",
        "| poems/poem5 | bleu4 / self_bleu4 | Other | 0.200 / 0.450 | - | 0.225 | - | no |",
        "| poems/poem7/seed2 | bleu4 / self_bleu4 | GAN | 0.250 / 0.450 | 0.210..0.290 | 0.225 "
        "| 0.200..0.250 | yes, T = 1.0 |",
    ]


def test_sweep_summary_labels_a_standalone_sweep_by_experiment_and_file(tmp_path):
    """A sweep file beside the seeds' results (``coco/results/seed2/sweep_x.json``) is
    labelled ``coco/seed2/sweep_x``, not by the ``results`` folder above it."""
    sweep = [{"name": name, "temperature": 1.0, "quality": quality, "diversity": 0.3,
              "quality_metric": "bleu4", "diversity_metric": "self_bleu4"}
             for name, quality in (("MLE", 0.2), ("GAN", 0.1))]
    standalone = tmp_path / "coco" / "results" / "seed2" / "sweep_x.json"
    standalone.parent.mkdir(parents=True)
    standalone.write_text(json.dumps(sweep))
    rows = [line for line in run_script("sweep_summary.py", [str(standalone)]).stdout
            .splitlines() if "| GAN |" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| coco/seed2/sweep_x"]
