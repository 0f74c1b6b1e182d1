"""SeqGAN's synthetic benchmark: MLE, SeqGAN, MaliGAN-basic and MaliGAN-full, 3 seeds.

A random LSTM oracle (N(0, 1) weights, vocabulary 5,000, length 20, hidden 32) samples
10,000 training sequences; an ``lstm_lm`` generator (embedding and hidden 32, as SeqGAN's)
is pretrained with MLE, then continued by every method for the same number of updates
(``examples/experiment.py``). Every ``save_interval_updates`` a checkpoint is scored:
NLL-oracle (the oracle's NLL of 1,000 generator samples) and NLL-test (the generator's NLL
of 1,000 held-out oracle sequences), nats per token. The oracle is the same for every seed;
the seed changes the generator's initialisation, batches and samples. A seed whose
``seed<N>/curves.json`` exists is not run again, so seeds can run in parallel
(``--seeds 2`` and ``--seeds 3`` in two shells) and a final run aggregates them. Writes
``results.json``, ``curves.png`` and the temperature sweep of seed 1 (``sweep.png``).

    python examples/synthetic_oracle/run.py --quick   # about a minute
    python examples/synthetic_oracle/run.py           # the full experiment (README.md)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from fairseq_maligan.errors import install_excepthook
from fairseq_maligan.evaluation import (
    beyond_baseline,
    evaluate_generator,
    fixed_length_rows,
    load_generator,
    nll_oracle,
    past_baseline_range,
    plot_sweep,
    temperature_sweep,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the driver
from experiment import (  # noqa: E402
    FULL_DISCRIMINATOR,
    METHODS,
    Budget,
    LMExperiment,
    audit_rows,
    cached_result,
    interval_checkpoints,
    mean_spread,
    parse_mode,
    print_comparisons,
    seed_summary,
    write_results,
)

from fairseq_maligan.oracle import Oracle

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Yu et al. 2017, Table 2 (their oracle, not this one: compare the ordering and the gaps).
PUBLISHED = {"random": 10.310, "mle": 9.038, "scheduled sampling": 8.985, "pg_bleu": 8.946,
             "seqgan": 8.736}

QUICK = Budget.quick(mle_epochs=3, max_tokens=1000, prefix_init=12, prefix_decay=4,
                     prefix_decay_updates=2, save_interval_updates=3, disc_steps=2)
# SeqGAN's budget (LantaoYu/SeqGAN, sequence_gan.py): 120 MLE epochs at batch 64, then 200
# adversarial generator updates; 64 sequences of 20 tokens and EOS are 1,344 tokens. D's
# budget: FULL_DISCRIMINATOR (examples/experiment.py), as in every full run.
FULL = Budget(mle_epochs=120, mle_patience=10, mle_max_epochs=200, mle_lr=0.01,
              max_tokens=1344, finetune_max_tokens=1344,
              updates=200, lr=1e-3, rollouts=16, prefix_init=16, prefix_decay=2,
              prefix_decay_updates=25, disc_lr=1e-3, **FULL_DISCRIMINATOR, disc_dim=64,
              save_interval_updates=20, temperatures=(0.5, 0.6, 0.7, 0.85, 1.0, 1.2))
# seqgan_samples: SeqGAN's generated_num = 10,000, drawn in whole batches of 64.
DATA_SIZES = {"quick": dict(vocab=200, train=600, test=100, seqgan_samples=200),
              "full": dict(vocab=5000, train=10000, test=1000, seqgan_samples=9984)}
GENERATOR = ["--arch", "lstm_lm", "--decoder-embed-dim", "32", "--decoder-hidden-size", "32",
             "--decoder-out-embed-dim", "32"]


def make_data(raw: Path, scale: dict) -> None:
    """The oracle (seed 0) and its train/valid/test samples as text (kept if present).

    Written to a private folder and renamed into place, so that seeds started in parallel
    never read a half-written file.
    """
    if raw.exists():
        return
    staging = raw.with_name(f"{raw.name}.{os.getpid()}")
    subprocess.run([
        sys.executable, str(ROOT / "scripts" / "make_oracle_data.py"), "--out", str(staging),
        "--vocab-size", str(scale["vocab"]), "--seq-len", "20", "--train", str(scale["train"]),
        "--valid", str(scale["test"]), "--test", str(scale["test"]), "--seed", "0",
    ], check=True)
    try:
        staging.rename(raw)
    except OSError:
        shutil.rmtree(staging)


def score(path: Path, data: Path, oracle: Oracle, num_samples: int, seed: int) -> dict:
    """NLL-oracle, invalid-sample share and NLL-test of one checkpoint."""
    model, task = load_generator(str(path), str(data))
    metrics = evaluate_generator(model, task, num_samples=num_samples,
                                 max_len=oracle.seq_len + 1, seed=seed, oracle=oracle)
    return {"nll_oracle": metrics["nll_oracle"], "invalid": metrics["oracle_invalid"],
            "nll_test": metrics["nll_test"]}


def seqgan_protocol(experiment: LMExperiment, oracle: Oracle, num_samples: int) -> dict:
    """NLL-oracle as SeqGAN computes it (``nll_oracle_fixed``: ``num_samples`` samples of
    exactly the oracle's length, every one scored) of the pretrained and final models."""
    paths = {"pretrained": experiment.out / "pretrained" / "checkpoint_best.pt",
             **{m: experiment.out / m / "checkpoint_last.pt" for m in METHODS}}
    scores = {}
    for name, path in paths.items():
        model, task = load_generator(str(path), str(experiment.data))
        rows = fixed_length_rows(model, num_samples, oracle.seq_len, seed=experiment.seed)
        scores[name] = nll_oracle(oracle, rows, task.target_dictionary)[0]
    return {"num_samples": num_samples, "nll_oracle_fixed": scores}


def curves(experiment: LMExperiment, checkpoints: dict[str, Path], oracle: Oracle) -> dict:
    """method -> list of {updates, nll_oracle, nll_test}, update 0 the pretrained model."""
    budget = experiment.budget
    start = score(checkpoints["pretrained"], experiment.data, oracle, budget.eval_samples,
                  experiment.seed)
    result = {}
    for method in METHODS:
        points = [{"updates": 0, **start}]
        for updates, path in interval_checkpoints(checkpoints[method].parent):
            points.append({"updates": budget.generator_updates(method, updates), **score(
                path, experiment.data, oracle, budget.eval_samples, experiment.seed)})
        result[method] = points
    return result


def plot_curves(per_seed: dict[int, dict], path: Path) -> None:
    """NLL-oracle and NLL-test against updates, mean over seeds with a min-max band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    for column, key in enumerate(("nll_oracle", "nll_test")):
        axes = figure.add_subplot(1, 2, column + 1)
        for method, label in METHODS.items():
            runs = [seed_curves[method] for seed_curves in per_seed.values()]
            updates = [p["updates"] for p in runs[0]]
            values = [[run[i][key] for run in runs] for i in range(len(updates))]
            axes.plot(updates, [statistics.fmean(v) for v in values], marker="o", label=label)
            axes.fill_between(updates, [min(v) for v in values], [max(v) for v in values],
                              alpha=0.2)
        axes.set_xlabel("updates after MLE pretraining")
        axes.set_ylabel(f"{key.replace('_', '-').upper()} (nats/token)")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    args = parse_mode(__doc__.splitlines()[0], HERE, QUICK, FULL, seeds=True)
    mode, budget, out, seeds = args.mode, args.budget, args.out, args.seeds
    scale = DATA_SIZES[mode]
    started = time.time()

    make_data(out / "raw", scale)
    oracle = Oracle.load(str(out / "raw" / "oracle.pt"))
    with open(out / "raw" / "test.txt") as test_file:
        test_ids = torch.tensor([[int(w[1:]) for w in line.split()] for line in test_file])
    oracle_floor = float(oracle.nll(test_ids).mean())

    per_seed, stages, fixed, pretraining = {}, [], {}, {}
    for seed in seeds:
        experiment = LMExperiment(out / f"seed{seed}", GENERATOR, budget, seed=seed,
                                  threads=args.threads, jobs=args.jobs, tokens_per_sample=32)

        def run_seed(experiment: LMExperiment = experiment) -> dict:
            checkpoints = experiment.run_all(out / "raw")
            print(f"\n== scoring the checkpoints of seed {experiment.seed}", flush=True)
            return {"curves": curves(experiment, checkpoints, oracle),
                    "stages": experiment.stages}

        done = cached_result(experiment.out / "curves.json", budget, run_seed)
        per_seed[seed] = done["curves"]
        stages += [{"seed": seed, **stage} for stage in done["stages"]]
        fixed[seed] = cached_result(
            experiment.out / "seqgan_protocol.json", budget,
            lambda experiment=experiment: seqgan_protocol(experiment, oracle,
                                                          scale["seqgan_samples"]),
        )["nll_oracle_fixed"]
        pretraining[seed] = experiment.pretraining()

    print("\n== temperature sweep of the models of the first seed", flush=True)
    first = out / f"seed{seeds[0]}"
    sweep = temperature_sweep(
        {METHODS[m]: str(first / m / "checkpoint_last.pt") for m in METHODS},
        budget.temperatures, budget.eval_samples, oracle=str(out / "raw" / "oracle.pt"),
        data=str(first / "data-bin"), max_len=oracle.seq_len + 1, seed=seeds[0],
    )
    plot_sweep(sweep, str(out / "sweep.png"),
               "NLL-oracle (nats/token; lower: better quality)",
               "NLL-test (nats/token; lower: better coverage)")

    start = {key: mean_spread([per_seed[s]["mle"][0][key] for s in seeds])
             for key in ("nll_oracle", "nll_test", "invalid")}
    last = {s: {m: {**per_seed[s][m][-1], "nll_oracle_fixed": fixed[s][m]} for m in METHODS}
            for s in seeds}
    start["nll_oracle_fixed"] = mean_spread([fixed[s]["pretrained"] for s in seeds])
    summary = seed_summary(last, ("nll_oracle_fixed", "nll_oracle", "nll_test", "invalid"))
    final, paired = summary["mean"], summary["paired_minus_mle"]
    beyond = beyond_baseline(sweep, METHODS["mle"])
    past = past_baseline_range(sweep, METHODS["mle"])
    plot_curves(per_seed, out / "curves.png")
    results = {
        "mode": mode, "seeds": seeds, "budget": budget, "vocab": scale["vocab"],
        "train_sequences": scale["train"], "oracle_nll_of_its_test_data": oracle_floor,
        "pretraining": pretraining, "seqgan_protocol_samples": scale["seqgan_samples"],
        "pretrained": start, "final": final, "paired_minus_mle": paired,
        "format_audit": audit_rows(stages),
        "beyond_mle_temperatures": beyond, "past_mle_range": past, "curves": per_seed,
        "sweep": sweep,
        "published_seqgan_table2": PUBLISHED, "stages": stages,
        "seconds": round(time.time() - started, 1),
    }
    write_results(out / "results.json", results)

    print(f"\nNLL-oracle / NLL-test (nats/token) after {budget.updates} updates from the same "
          f"MLE checkpoint; mean +- std over seeds {list(seeds)}")
    print(f"oracle's NLL of its own test data: {oracle_floor:.3f}")
    print(f"NLL-oracle (SeqGAN): {scale['seqgan_samples']} samples of exactly "
          f"{oracle.seq_len} tokens; (valid): {budget.eval_samples} free samples, those of "
          f"the oracle's length only")
    print(f"{'model':<16}{'NLL-oracle (SeqGAN)':>22}{'NLL-oracle (valid)':>28}{'NLL-test':>18}"
          f"{'invalid':>9}")
    for label, row in [("MLE pretrained", start),
                       *((label, final[method]) for method, label in METHODS.items())]:
        print(f"{label:<16}{_cell(row['nll_oracle_fixed'], len(seeds)):>22}"
              f"{_cell(row['nll_oracle'], len(seeds)):>28}"
              f"{_cell(row['nll_test'], len(seeds)):>18}{row['invalid']['mean']:>9.1%}")
    for seed in seeds:
        took = pretraining[seed]
        print(f"seed {seed} MLE pretraining: {took['epochs']} epochs ({took['updates']} "
              f"updates); best valid at update {took['best_updates']}")
    print_comparisons({**results, "beyond_mle_temperatures": {seeds[0]: beyond},
                       "past_mle_range": {seeds[0]: past}})
    print(f"\ntotal {results['seconds']:.0f} s; results, curves.png and sweep.png in {out}")


def _cell(value: dict, seeds: int) -> str:
    if value["n"] == 0:
        return "none valid"
    cell = f"{value['mean']:.3f} +- {value['std']:.3f}"
    return cell if value["n"] == seeds else f"{cell} ({value['n']} seeds)"


if __name__ == "__main__":
    install_excepthook()
    main()
