"""English->German on Multi30k: an MLE transformer, then MLE continued versus SeqGAN and MaliGAN.

1. trains one joint sentencepiece model on train.en + train.de and encodes every split;
2. binarises the pieces with ``fairseq-preprocess --joined-dictionary`` (en -> de);
3. for each seed (``--seeds``, each in ``<out>/seed<N>``) trains a small MLE
   ``transformer`` (label-smoothed cross-entropy, inverse_sqrt) to convergence: a floor
   of epochs, then on until the valid loss stops improving (``pretrained/``);
4. from its ``checkpoint_best.pt`` trains the same number of updates of each method:
   MLE continued (``--finetune-from-model``, the fair baseline), SeqGAN, MaliGAN-basic
   and MaliGAN-full (``maligan_mixed``) under the ``maligan_translation`` task;
5. translates test2016 with stock ``fairseq-generate`` (beam 5, no ``--user-dir``),
   decodes the hypotheses with sentencepiece and scores them with sacreBLEU against the
   raw test2016.de (with its bootstrap interval); samples two translations per sentence
   at each temperature of the sweep (sampled BLEU against pairwise BLEU);
6. prints the tables over seeds and writes ``results.json`` (commands, times, scores).

A rerun with the same ``--out`` resumes: finished stages are kept (the sentencepiece
pieces, ``data-bin``, MLE with its ``pretraining.json``, a seed with its
``results.json``) and every fairseq-train stage continues from its
``checkpoint_last.pt``; a rerun with other sizes than those in the directory's
``scale.json`` is refused.

    python examples/translation/run.py --quick   # a few minutes on 2 CPU cores
    python examples/translation/run.py           # the full experiment (see README.md)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import shutil
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from fairseq import utils
from fairseq.dataclass.configs import GenerationConfig

from fairseq_maligan.errors import install_excepthook
from fairseq_maligan.evaluation import load_generator, plot_sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the driver
from experiment import (  # noqa: E402
    IN_LOOP_BATCHES,
    METHODS,
    PLUGIN,
    Runner,
    checkpoint_updates,
    over_seeds,
    print_over_seeds,
    seed_pretraining,
    write_results,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"
SPLITS = {"train": "train", "valid": "val", "test": "test2016"}
SOURCE, TARGET = "en", "de"
STAGES = ("sentencepiece", "preprocess", "mle", "finetune", "evaluate")
KEYS = ("bleu", "length_ratio")
SWEEP_SAMPLES = 2  # translations sampled per test sentence at each temperature


@dataclass(frozen=True)
class Scale:
    """Sizes of one mode of the experiment."""

    train_sentences: int | None  # None: all 29,000
    vocab: int
    layers: int
    dim: int
    ffn: int
    heads: int
    dropout: float
    mle_lr: float
    mle_warmup: int
    mle_epochs: int  # at least this many epochs of MLE
    mle_patience: int  # > 0: then on until the valid loss has not improved for this many
    mle_max_epochs: int  # epochs, or this many in all
    mle_max_tokens: int
    finetune_lr: float
    finetune_updates: int
    finetune_max_tokens: int
    num_samples: int  # m of MaliGAN
    rollouts: int  # R of SeqGAN
    prefix_init: int
    disc_dim: int
    temperatures: tuple[float, ...]  # of the sampling sweep
    log_interval: int
    mle_max_updates: int | None = None  # stop MLE after this many updates (timing runs)
    methods: tuple[str, ...] = tuple(METHODS)  # continued from MLE, MLE among them


QUICK = Scale(
    train_sentences=4000, vocab=1000, layers=2, dim=128, ffn=256, heads=4, dropout=0.1,
    mle_lr=2e-3, mle_warmup=100, mle_epochs=4, mle_patience=0, mle_max_epochs=4,
    mle_max_tokens=2048,
    finetune_lr=1e-4, finetune_updates=40, finetune_max_tokens=1024,
    num_samples=4, rollouts=2, prefix_init=10, disc_dim=32, temperatures=(1.0,),
    log_interval=20,
)
FULL = Scale(
    train_sentences=None, vocab=8000, layers=3, dim=256, ffn=512, heads=4, dropout=0.1,
    mle_lr=1e-3, mle_warmup=400, mle_epochs=10, mle_patience=3, mle_max_epochs=60,
    mle_max_tokens=4096,
    finetune_lr=1e-4, finetune_updates=200, finetune_max_tokens=2048,
    num_samples=4, rollouts=4, prefix_init=10, disc_dim=64,
    temperatures=(0.7, 0.85, 1.0, 1.2), log_interval=50,
)


class Experiment(Runner):
    """Runs the stages, records their commands and wall-clock times: the shared data in
    ``--out`` (``seed`` None), or one seed's training and scoring in ``<out>/seed<N>``."""

    def __init__(self, args: argparse.Namespace, scale: Scale, seed: int | None = None
                 ) -> None:
        super().__init__(args.out if seed is None else args.out / f"seed{seed}", args.threads,
                         args.jobs)
        self.args = args
        self.scale = scale
        self.seed = seed
        self.data_dir: Path = args.data_dir
        self.pieces = args.out / "pieces"
        self.spm_prefix = args.out / "spm" / "spm"
        self.data_bin = args.out / "data-bin"

    # -- 1. sentencepiece -------------------------------------------------------------

    def read_split(self, split: str, lang: str) -> list[str]:
        """Raw lines of one split (the quick mode's training subset is its first lines)."""
        path = self.data_dir / f"{SPLITS[split]}.{lang}"
        if not path.is_file():
            sys.exit(f"data file not found: {path} (use --data-dir)")
        lines = path.read_text(encoding="utf-8").splitlines()
        if split == "train" and self.scale.train_sentences is not None:
            lines = lines[: self.scale.train_sentences]
        return lines

    def sentencepiece(self) -> None:
        """Train one joint model on train.en + train.de; encode every split to pieces
        (kept from an earlier run when the pieces of every split are there)."""
        import sentencepiece as spm

        if all((self.pieces / f"{split}.{lang}").exists()
               for split in SPLITS for lang in (SOURCE, TARGET)):
            print("\n== sentencepiece: kept from the earlier run", flush=True)
            return

        print(f"\n== sentencepiece: joint unigram model, vocabulary {self.scale.vocab}",
              flush=True)
        started = time.time()
        self.spm_prefix.parent.mkdir(parents=True, exist_ok=True)
        self.pieces.mkdir(parents=True, exist_ok=True)
        train_text = self.spm_prefix.parent / "train.en-de.txt"
        train_text.write_text(
            "".join(line + "\n" for lang in (SOURCE, TARGET)
                    for line in self.read_split("train", lang)),
            encoding="utf-8",
        )
        options = dict(
            input=str(train_text), model_prefix=str(self.spm_prefix),
            vocab_size=self.scale.vocab, model_type="unigram", character_coverage=1.0,
            num_threads=self.args.threads, minloglevel=2,
        )
        spm.SentencePieceTrainer.train(**options)
        for split in SPLITS:
            for lang in (SOURCE, TARGET):
                encoded = self.processor.encode(self.read_split(split, lang), out_type=str)
                (self.pieces / f"{split}.{lang}").write_text(
                    "".join(" ".join(pieces) + "\n" for pieces in encoded), encoding="utf-8"
                )
        seconds = time.time() - started
        print(f"   done in {seconds:.0f} s", flush=True)
        self.record(
            "sentencepiece",
            "sentencepiece.SentencePieceTrainer.train("
            + ", ".join(f"{k}={v!r}" for k, v in options.items()) + "); encode train/val/"
            "test2016 .en/.de to pieces",
            seconds,
        )

    # -- 2. fairseq-preprocess --------------------------------------------------------

    def preprocess(self) -> None:
        """Binarise the pieces with one dictionary shared by English and German (kept from
        an earlier run that finished)."""
        if (self.data_bin / f"test.{SOURCE}-{TARGET}.{TARGET}.idx").exists():
            print("\n== preprocess: kept from the earlier run", flush=True)
            return
        shutil.rmtree(self.data_bin, ignore_errors=True)
        self.fairseq("preprocess", "preprocess", [
            "--source-lang", SOURCE, "--target-lang", TARGET, "--joined-dictionary",
            "--trainpref", str(self.pieces / "train"), "--validpref", str(self.pieces / "valid"),
            "--testpref", str(self.pieces / "test"), "--destdir", str(self.data_bin),
            "--workers", "1",
        ])

    # -- 3./4. training ---------------------------------------------------------------

    def model_args(self) -> list[str]:
        """The generator: a small transformer with every embedding shared."""
        s = self.scale
        return [
            "--arch", "transformer", "--share-all-embeddings",
            "--encoder-layers", str(s.layers), "--decoder-layers", str(s.layers),
            "--encoder-embed-dim", str(s.dim), "--decoder-embed-dim", str(s.dim),
            "--encoder-ffn-embed-dim", str(s.ffn), "--decoder-ffn-embed-dim", str(s.ffn),
            "--encoder-attention-heads", str(s.heads), "--decoder-attention-heads", str(s.heads),
            "--dropout", str(s.dropout),
        ]

    def common_args(self, save_dir: Path) -> list[str]:
        """Data, hardware and logging options shared by every training run.

        ``--user-dir`` in the MLE runs too: with torch >= 2.6, stock fairseq cannot reload
        its own ``transformer`` checkpoints; the plugin saves them in a form that stock
        tools (and ``--finetune-from-model``) load with torch's safe loading.
        """
        return [
            str(self.data_bin), "--user-dir", str(PLUGIN),
            "--source-lang", SOURCE, "--target-lang", TARGET, *self.model_args(),
            "--cpu", *IN_LOOP_BATCHES, "--seed", str(self.seed),
            "--log-format", "simple", "--log-interval", str(self.scale.log_interval),
            "--no-epoch-checkpoints", "--save-dir", str(save_dir),
        ]

    def train_mle(self) -> None:
        """The MLE baseline: label-smoothed cross-entropy, Adam, inverse_sqrt schedule, to
        convergence (``Runner.to_convergence``)."""
        s = self.scale
        cap = ["--max-update", str(s.mle_max_updates)] if s.mle_max_updates else []
        self.to_convergence("pretrain_mle", self.out / "pretrained", [
            *self.common_args(self.out / "pretrained"), "--task", "translation",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--weight-decay", "0.0001",
            "--clip-norm", "1.0", "--lr", str(s.mle_lr), "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", str(s.mle_warmup), "--warmup-init-lr", "1e-07",
            "--max-tokens", str(s.mle_max_tokens), *cap,
        ], s.mle_epochs, s.mle_patience, s.mle_max_epochs)

    def method_args(self, method: str) -> list[str]:
        """Task, criterion and optimiser of one method: the label-smoothed MLE baseline,
        or an adversarial criterion with a conditional CNN discriminator (it reads the
        source too) trained alone for the first 10 % of the updates."""
        s = self.scale
        if method == "mle":
            return ["--task", "translation", "--criterion", "label_smoothed_cross_entropy",
                    "--label-smoothing", "0.1", "--optimizer", "adam"]
        adversarial = [
            "--task", "maligan_translation", "--eval-bleu-remove-bpe", "sentencepiece",
            "--optimizer", "maligan_adam", "--disc-arch", "cnn_discriminator",
            "--disc-embed-dim", str(s.disc_dim), "--disc-hidden-dim", str(s.disc_dim),
            "--disc-lr", "1e-3", "--disc-warmup-updates", str(max(1, s.finetune_updates // 10)),
        ]
        if method == "seqgan":
            return [*adversarial, "--criterion", "seqgan", "--rollouts", str(s.rollouts)]
        maligan = [*adversarial, "--criterion", "maligan_mixed",
                   "--num-samples", str(s.num_samples), "--mle-weight", "1"]
        if method == "maligan_basic":
            return [*maligan, "--prefix-init", "0", "--prefix-decay", "0"]
        decay_updates = max(1, s.finetune_updates // (s.prefix_init + 1))
        return [*maligan, "--prefix-init", str(s.prefix_init), "--prefix-decay", "1",
                "--prefix-decay-updates", str(decay_updates)]

    @property
    def mle_checkpoint(self) -> Path:
        """The MLE start: every method begins here, and it is scored too."""
        return self.out / "pretrained" / "checkpoint_best.pt"

    def finetune(self, method: str) -> Path:
        """Continue the MLE start for the same updates, batches and learning rate (fresh
        Adam, constant 1e-4) with ``method``, saving every ``resume_interval_updates``
        updates (a stage is less than an epoch); its final checkpoint. An adversarial run's
        format audit (with its D's accuracy on held-out rows) goes into its stage."""
        s = self.scale
        save_dir = self.out / method
        log = self.train_updates(method, save_dir, [
            *self.common_args(save_dir), "--finetune-from-model", str(self.mle_checkpoint),
            "--max-tokens", str(s.finetune_max_tokens),
            "--adam-betas", "(0.9, 0.98)", "--weight-decay", "0.0001", "--clip-norm", "1.0",
            "--lr", str(s.finetune_lr), "--lr-scheduler", "fixed", *self.method_args(method),
            "--save-interval-updates", str(self.resume_interval_updates),
            "--keep-interval-updates", "1",
        ], s.finetune_updates)
        checkpoint = save_dir / "checkpoint_last.pt"
        if method != "mle":
            self.audit_stage(method, log, checkpoint, self.data_bin, s.finetune_max_tokens,
                             self.seed)
        return checkpoint

    # -- 5. evaluation ----------------------------------------------------------------

    @cached_property
    def processor(self) -> Any:
        """The trained sentencepiece model."""
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=f"{self.spm_prefix}.model")

    def decode(self, text: str) -> str:
        """Pieces (space-separated, as fairseq prints them) to text, ``<unk>`` dropped."""
        return self.processor.decode_pieces([p for p in text.split() if p != "<unk>"])

    def translate(self, name: str, checkpoint: Path) -> list[str]:
        """Stock fairseq-generate (beam 5, no --user-dir); H- lines in the original order,
        decoded with sentencepiece."""
        output = self.fairseq(f"generate_{name}", "generate", [
            str(self.data_bin), "--path", str(checkpoint), "--source-lang", SOURCE,
            "--target-lang", TARGET, "--gen-subset", "test", "--beam", "5",
            "--max-tokens", "4096", "--cpu", "--num-workers", "0", "--seed", str(self.seed),
        ], echo=False)
        hypotheses: dict[int, str] = {}
        for line in output.splitlines():
            if line.startswith("H-"):
                ident, _, text = line.split("\t", 2)
                hypotheses[int(ident[2:])] = self.decode(text)
        count = len(self.read_split("test", TARGET))
        if sorted(hypotheses) != list(range(count)):
            sys.exit(f"fairseq-generate gave {len(hypotheses)} hypotheses for {count} sentences")
        detok = [hypotheses[i] for i in range(count)]
        (self.out / "translations").mkdir(exist_ok=True)
        (self.out / "translations" / f"{name}.de").write_text(
            "".join(line + "\n" for line in detok), encoding="utf-8"
        )
        return detok

    def score(self, checkpoints: dict[str, Path]) -> dict[str, dict[str, Any]]:
        """sacreBLEU of each model's test2016 translations (beam 5) against the raw
        references, with sacreBLEU's 95 % bootstrap interval over the sentences and the
        hypothesis / reference length ratio."""
        from sacrebleu.metrics import BLEU

        references = self.read_split("test", TARGET)
        scores = {}
        for name, checkpoint in checkpoints.items():
            bleu = BLEU()
            score = bleu.corpus_score(self.translate(name, checkpoint), [references],
                                      n_bootstrap=1000)
            scores[name] = {
                "bleu": round(score.score, 2),
                "bleu_ci": [round(score._mean - score._ci, 2), round(score._mean + score._ci, 2)],
                "length_ratio": round(score.sys_len / score.ref_len, 4),
                "updates": checkpoint_updates(checkpoint), "bleu_detail": str(score),
                "signature": str(bleu.get_signature()),
            }
        return scores

    def sample_translations(self, model: torch.nn.Module, task: Any, temperature: float
                            ) -> list[list[str]]:
        """``SWEEP_SAMPLES`` translations of every test sentence sampled at
        ``temperature`` (fairseq's own sampling search), decoded; one list per draw."""
        generator = task.build_generator([model], GenerationConfig(
            sampling=True, temperature=temperature, beam=SWEEP_SAMPLES, nbest=SWEEP_SAMPLES))
        batches = task.get_batch_iterator(
            task.dataset("test"), max_tokens=4096,
            max_positions=utils.resolve_max_positions(task.max_positions(),
                                                      model.max_positions()),
        ).next_epoch_itr(shuffle=False)
        draws: list[dict[int, str]] = [{} for _ in range(SWEEP_SAMPLES)]
        torch.manual_seed(self.seed)
        with torch.no_grad():
            for sample in batches:
                for ident, hypotheses in zip(sample["id"].tolist(),
                                             task.inference_step(generator, [model], sample)):
                    for draw, hypothesis in zip(draws, hypotheses):
                        draw[ident] = self.decode(
                            task.target_dictionary.string(hypothesis["tokens"]))
        return [[draw[i] for i in range(len(draw))] for draw in draws]

    def sweep(self, checkpoints: dict[str, Path]) -> list[dict[str, Any]]:
        """Temperature sweep of every method: sampled translations' sacreBLEU against
        the references (quality, the mean over the draws) and their pairwise BLEU (one
        draw against the other, both ways: lower is more diverse), drawn to
        ``sweep.png``."""
        from sacrebleu.metrics import BLEU

        references = self.read_split("test", TARGET)
        records = []
        for method in self.scale.methods:
            model, task = load_generator(str(checkpoints[method]), str(self.data_bin))
            task.load_dataset("test")
            for temperature in self.scale.temperatures:
                first, second = self.sample_translations(model, task, temperature)
                quality = [BLEU().corpus_score(draw, [references]).score
                           for draw in (first, second)]
                pairwise = [BLEU().corpus_score(a, [b]).score
                            for a, b in ((first, second), (second, first))]
                records.append({
                    "name": METHODS[method], "temperature": temperature,
                    "quality": sum(quality) / 2, "diversity": sum(pairwise) / 2,
                    "quality_metric": "bleu_sampled", "diversity_metric": "pairwise_bleu",
                })
        plot_sweep(records, str(self.out / "sweep.png"),
                   "sacreBLEU of sampled translations (higher: better quality)",
                   "pairwise BLEU of two samples (lower: more diverse)")
        return records


def training_speed(stages: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """Updates per second of one training stage: fairseq's own ``ups`` (the mean of its
    progress lines) and updates over the stage's whole wall-clock time; None for a stage
    that did not run (kept from an earlier run)."""
    stage = next((s for s in stages if s["stage"] == name), None)
    if stage is None or stage.get("kept"):
        return None
    text = Path(stage["log"]).read_text()
    ups = [float(v) for v in re.findall(r"\| train_inner \|.*?\bups=([\d.]+)", text)]
    updates = re.findall(r"\bnum_updates=(\d+)", text) or re.findall(r"\bnum_updates (\d+)", text)
    total = int(updates[-1]) if updates else None
    return {
        "fairseq_ups_mean": round(sum(ups) / len(ups), 3) if ups else None,
        "updates": total,
        "updates_per_wall_second": round(total / stage["seconds"], 3) if total else None,
    }


def parse_args() -> argparse.Namespace:
    """Command-line options; ``--out`` defaults to ``output/quick`` or ``output/full``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny vocabulary, 4,000 sentences, tiny model, few updates")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help=f"raw Multi30k (default: {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: examples/translation/output/quick "
                        "or .../full)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS / MKL_NUM_THREADS of the fairseq processes "
                        "(default 1: see README.md)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="fine-tuning methods to train at once, each a fairseq process "
                        "of --threads threads (default 1)")
    parser.add_argument("--seeds", "--seed", type=int, nargs="+",
                        help="training and sampling seeds, each in <out>/seed<N> (default "
                        "1 2 3; quick: 1); a seed whose results.json exists is not run "
                        "again, so seeds can run in parallel and a final run aggregates")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS),
                        help="the methods continued from MLE (default: all four; MLE, the "
                        "baseline, is always one)")
    parser.add_argument("--log-interval", type=int, help="override fairseq's --log-interval")
    parser.add_argument("--mle-updates", type=int,
                        help="stop MLE after this many updates (timing runs)")
    parser.add_argument("--finetune-updates", type=int,
                        help="override the updates of each fine-tuning run")
    parser.add_argument("--stop-after", choices=STAGES, default="evaluate",
                        help="stop after this stage (timing runs)")
    parser.add_argument("--skip", choices=STAGES[:3], action="append", default=[],
                        help="do not run this stage: use its output in --out as it is "
                        "(repeatable; a rerun keeps finished stages anyway)")
    args = parser.parse_args()
    if args.methods and "mle" not in args.methods:
        parser.error("--methods: mle, the baseline every method is compared with, must be one")
    logging.disable(logging.INFO)
    mode = "quick" if args.quick else "full"
    args.mode = mode
    args.seeds = tuple(args.seeds or ((1,) if args.quick else (1, 2, 3)))
    args.out = (args.out or HERE / "output" / mode).resolve()
    args.data_dir = args.data_dir.resolve()
    return args


def check_scale(path: Path, scale: Scale) -> None:
    """Record the sizes and methods of the run in ``--out``, or exit if an earlier run
    there used others (resuming it with these would mix the two)."""
    wanted = json.loads(json.dumps(dataclasses.asdict(scale)))
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != wanted:
            changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
            sys.exit(f"{path.parent} holds a run with other settings ({', '.join(changed)}); "
                     "remove it or choose another --out")
    else:
        write_results(path, wanted)


def train_seed(experiment: Experiment, last: int) -> dict[str, Path]:
    """One seed's MLE start and (with ``--stop-after`` finetune or later) every method
    continued from it: name -> checkpoint."""
    if "mle" not in experiment.args.skip:
        experiment.train_mle()
    checkpoints = {"pretrained": experiment.mle_checkpoint}
    if last >= STAGES.index("finetune"):
        methods = experiment.scale.methods
        checkpoints.update(zip(methods, experiment.in_lanes(experiment.finetune, methods)))
    return checkpoints


def main() -> None:
    """Run the stages up to ``--stop-after``, then print the tables and write results.json."""
    args = parse_args()
    scale = QUICK if args.quick else FULL
    overrides = {"mle_max_updates": args.mle_updates,
                 "finetune_updates": args.finetune_updates, "log_interval": args.log_interval,
                 "methods": args.methods and tuple(args.methods)}
    scale = dataclasses.replace(scale, **{k: v for k, v in overrides.items() if v is not None})
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    check_scale(args.out / "scale.json", scale)
    print(f"{args.mode} mode: data {args.data_dir}, output {args.out}, seeds "
          f"{list(args.seeds)}, {args.threads} threads", flush=True)

    last = STAGES.index(args.stop_after)
    shared = Experiment(args, scale)
    if "sentencepiece" not in args.skip:
        shared.sentencepiece()
    if last >= 1 and "preprocess" not in args.skip:
        shared.preprocess()

    def run_seed(out: Path, seed: int) -> dict[str, Any]:
        experiment = Experiment(args, scale, seed)
        checkpoints = train_seed(experiment, last)
        return {"scores": experiment.score(checkpoints), "sweep": experiment.sweep(checkpoints),
                "stages": experiment.stages,
                "speed": {name: training_speed(experiment.stages, name)
                          for name in ("pretrain_mle", *scale.methods)}}

    if last == STAGES.index("evaluate"):
        per_seed = over_seeds(args.out, args.seeds, scale, run_seed, KEYS)
    elif last >= STAGES.index("mle"):
        stages = []
        for seed in args.seeds:
            experiment = Experiment(args, scale, seed)
            train_seed(experiment, last)
            stages += [{"seed": seed, **stage} for stage in experiment.stages]
        per_seed = {"seeds": list(args.seeds), "stages": stages,
                    "pretraining": seed_pretraining(args.out, args.seeds)}
    else:
        per_seed = {}
    results = {
        "mode": args.mode, "data_dir": str(args.data_dir), "output_dir": str(args.out),
        "threads": args.threads, "scale": scale, "data_stages": shared.stages, **per_seed,
        "total_seconds": round(time.time() - started, 1),
    }
    write_results(args.out / "results.json", results)
    if "scores" in per_seed:
        print_over_seeds(f"test2016 sacreBLEU (beam 5) and hypothesis/reference length; "
                         f"{scale.finetune_updates} updates of each method after MLE",
                         per_seed, KEYS)
        print(f"signature: {per_seed['scores'][args.seeds[0]]['pretrained']['signature']}")
    print(f"\ntotal time {results['total_seconds']:.0f} s; results in "
          f"{args.out / 'results.json'}, sweep.png in seed<N>/")


if __name__ == "__main__":
    install_excepthook()
    main()
