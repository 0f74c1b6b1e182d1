"""English->German on Multi30k: an MLE transformer, then MLE continued versus MaliGAN.

1. trains one joint sentencepiece model on train.en + train.de and encodes every split;
2. binarises the pieces with ``fairseq-preprocess --joined-dictionary`` (en -> de);
3. trains a small MLE ``transformer`` (label-smoothed cross-entropy, inverse_sqrt) to
   convergence: a floor of epochs, then on until the valid loss stops improving;
4. from its ``checkpoint_best.pt`` trains the same number of updates of (a) MLE
   (``--finetune-from-model``, the fair baseline) and (b) ``maligan_mixed`` under the
   ``maligan_translation`` task;
5. translates test2016 with stock ``fairseq-generate`` (beam 5, no ``--user-dir``),
   decodes the hypotheses with sentencepiece and scores them with sacreBLEU against the
   raw test2016.de;
6. prints a table and writes ``results.json`` (commands, wall-clock times, scores).

A rerun with the same ``--out`` resumes: finished stages are kept (the sentencepiece
pieces, ``data-bin``, MLE with its ``pretraining.json``) and every fairseq-train stage
continues from its ``checkpoint_last.pt``; a rerun with other sizes than those in the
directory's ``scale.json`` is refused.

    python examples/translation/run.py --quick   # a few minutes on 2 CPU cores
    python examples/translation/run.py           # the full experiment (see README.md)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairseq_maligan.errors import install_excepthook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the driver
from experiment import PLUGIN, Runner, checkpoint_updates, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"
SPLITS = {"train": "train", "valid": "val", "test": "test2016"}
SOURCE, TARGET = "en", "de"
STAGES = ("sentencepiece", "preprocess", "mle", "finetune", "evaluate")


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
    num_samples: int
    prefix_init: int
    disc_dim: int
    log_interval: int
    mle_max_updates: int | None = None  # stop MLE after this many updates (timing runs)


QUICK = Scale(
    train_sentences=4000, vocab=1000, layers=2, dim=128, ffn=256, heads=4, dropout=0.1,
    mle_lr=2e-3, mle_warmup=100, mle_epochs=4, mle_patience=0, mle_max_epochs=4,
    mle_max_tokens=2048,
    finetune_lr=1e-4, finetune_updates=40, finetune_max_tokens=1024,
    num_samples=4, prefix_init=10, disc_dim=32, log_interval=20,
)
FULL = Scale(
    train_sentences=None, vocab=8000, layers=3, dim=256, ffn=512, heads=4, dropout=0.1,
    mle_lr=1e-3, mle_warmup=400, mle_epochs=10, mle_patience=3, mle_max_epochs=60,
    mle_max_tokens=4096,
    finetune_lr=1e-4, finetune_updates=200, finetune_max_tokens=2048,
    num_samples=4, prefix_init=10, disc_dim=64, log_interval=50,
)


class Experiment(Runner):
    """Runs the stages, records their commands and wall-clock times."""

    def __init__(self, args: argparse.Namespace, scale: Scale) -> None:
        super().__init__(args.out, args.threads)
        self.args = args
        self.scale = scale
        self.data_dir: Path = args.data_dir
        self.pieces = self.out / "pieces"
        self.spm_prefix = self.out / "spm" / "spm"
        self.data_bin = self.out / "data-bin"

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
        processor = spm.SentencePieceProcessor(model_file=f"{self.spm_prefix}.model")
        for split in SPLITS:
            for lang in (SOURCE, TARGET):
                encoded = processor.encode(self.read_split(split, lang), out_type=str)
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
            "--cpu", "--num-workers", "0", "--seed", str(self.args.seed),
            "--log-format", "simple", "--log-interval", str(self.scale.log_interval),
            "--no-epoch-checkpoints", "--save-dir", str(save_dir),
        ]

    def train_mle(self) -> None:
        """The MLE baseline: label-smoothed cross-entropy, Adam, inverse_sqrt schedule, to
        convergence (``Runner.to_convergence``)."""
        s = self.scale
        cap = ["--max-update", str(s.mle_max_updates)] if s.mle_max_updates else []
        self.to_convergence("mle", self.out / "mle", [
            *self.common_args(self.out / "mle"), "--task", "translation",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--weight-decay", "0.0001",
            "--clip-norm", "1.0", "--lr", str(s.mle_lr), "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", str(s.mle_warmup), "--warmup-init-lr", "1e-07",
            "--max-tokens", str(s.mle_max_tokens), *cap,
        ], s.mle_epochs, s.mle_patience, s.mle_max_epochs)

    def finetune_args(self, save_dir: Path) -> list[str]:
        """What the two fine-tuning runs share: start, batches, learning rate (their updates:
        ``Runner.train_updates``)."""
        s = self.scale
        return [
            *self.common_args(save_dir), "--finetune-from-model", str(self.mle_checkpoint),
            "--max-tokens", str(s.finetune_max_tokens),
            "--adam-betas", "(0.9, 0.98)", "--weight-decay", "0.0001", "--clip-norm", "1.0",
            "--lr", str(s.finetune_lr), "--lr-scheduler", "fixed",
        ]

    @property
    def mle_checkpoint(self) -> Path:
        """The MLE start: both fine-tuning runs begin here, and it is scored too."""
        return self.out / "mle" / "checkpoint_best.pt"

    def train_mle_continued(self) -> None:
        """(a) MLE for the same number of updates: the fair baseline."""
        save_dir = self.out / "mle_continued"
        self.train_updates("mle_continued", save_dir, [
            *self.finetune_args(save_dir), "--task", "translation",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "adam",
        ], self.scale.finetune_updates)

    def train_maligan(self) -> None:
        """(b) maligan_mixed: N from prefix_init down to 0, D-only warm-up of 10 %."""
        s = self.scale
        decay_updates = max(1, s.finetune_updates // (s.prefix_init + 1))
        save_dir = self.out / "maligan"
        self.train_updates("maligan", save_dir, [
            *self.finetune_args(save_dir), "--task", "maligan_translation",
            "--eval-bleu-remove-bpe", "sentencepiece",
            "--criterion", "maligan_mixed", "--optimizer", "maligan_adam",
            "--num-samples", str(s.num_samples), "--mle-weight", "1",
            "--prefix-init", str(s.prefix_init), "--prefix-decay", "1",
            "--prefix-decay-updates", str(decay_updates),
            "--disc-arch", "cnn_discriminator", "--disc-embed-dim", str(s.disc_dim),
            "--disc-hidden-dim", str(s.disc_dim), "--disc-lr", "1e-3",
            "--disc-warmup-updates", str(max(1, s.finetune_updates // 10)),
        ], s.finetune_updates)

    # -- 5. evaluation ----------------------------------------------------------------

    def translate(self, name: str, checkpoint: Path) -> list[str]:
        """Stock fairseq-generate (beam 5, no --user-dir); H- lines in the original order,
        decoded with sentencepiece."""
        import sentencepiece as spm

        output = self.fairseq(f"generate_{name}", "generate", [
            str(self.data_bin), "--path", str(checkpoint), "--source-lang", SOURCE,
            "--target-lang", TARGET, "--gen-subset", "test", "--beam", "5",
            "--max-tokens", "4096", "--cpu", "--num-workers", "0", "--seed", str(self.args.seed),
        ], echo=False)
        hypotheses: dict[int, list[str]] = {}
        for line in output.splitlines():
            if line.startswith("H-"):
                ident, _, text = line.split("\t", 2)
                hypotheses[int(ident[2:])] = [p for p in text.split() if p != "<unk>"]
        count = len(self.read_split("test", TARGET))
        if sorted(hypotheses) != list(range(count)):
            sys.exit(f"fairseq-generate gave {len(hypotheses)} hypotheses for {count} sentences")
        processor = spm.SentencePieceProcessor(model_file=f"{self.spm_prefix}.model")
        detok = [processor.decode_pieces(hypotheses[i]) for i in range(count)]
        (self.out / "translations").mkdir(exist_ok=True)
        (self.out / "translations" / f"{name}.de").write_text(
            "".join(line + "\n" for line in detok), encoding="utf-8"
        )
        return detok

    def evaluate(self) -> list[dict[str, Any]]:
        """sacreBLEU of each model's test2016 translations against the raw references."""
        from sacrebleu.metrics import BLEU

        references = self.read_split("test", TARGET)
        models = [
            ("MLE (start)", "mle", self.mle_checkpoint),
            ("MLE continued", "mle_continued", self.out / "mle_continued" / "checkpoint_last.pt"),
            ("MaliGAN (maligan_mixed)", "maligan", self.out / "maligan" / "checkpoint_last.pt"),
        ]
        start_updates = checkpoint_updates(self.mle_checkpoint)
        rows = []
        for label, name, checkpoint in models:
            hypotheses = self.translate(name, checkpoint)
            bleu = BLEU()
            score = bleu.corpus_score(hypotheses, [references])
            extra = 0 if name == "mle" else checkpoint_updates(checkpoint)
            rows.append({
                "model": label, "checkpoint": str(checkpoint),
                "updates": f"{start_updates}" if name == "mle" else f"{start_updates}+{extra}",
                "mle_updates": start_updates, "finetune_updates": extra,
                "bleu": round(score.score, 2), "bleu_detail": str(score),
                "signature": str(bleu.get_signature()),
            })
        return rows


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
    parser.add_argument("--seed", type=int, default=1)
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
    mode = "quick" if args.quick else "full"
    args.mode = mode
    args.out = (args.out or HERE / "output" / mode).resolve()
    args.data_dir = args.data_dir.resolve()
    return args


def check_scale(path: Path, scale: Scale) -> None:
    """Record the sizes of the run in ``--out``, or exit if an earlier run there used
    others (resuming it with these would mix the two)."""
    wanted = dataclasses.asdict(scale)
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != wanted:
            changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
            sys.exit(f"{path.parent} holds a run with other sizes ({', '.join(changed)}); "
                     "remove it or choose another --out")
    else:
        write_results(path, wanted)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The results table: model, updates (MLE + fine-tuning), sacreBLEU."""
    print(f"\n{'model':<26}{'updates':>12}{'sacreBLEU':>11}")
    for row in rows:
        print(f"{row['model']:<26}{row['updates']:>12}{row['bleu']:>11.2f}")
    print(f"signature: {rows[0]['signature']}")


def main() -> None:
    """Run the stages up to ``--stop-after``, then print the table and write results.json."""
    args = parse_args()
    scale = QUICK if args.quick else FULL
    overrides = {"mle_max_updates": args.mle_updates,
                 "finetune_updates": args.finetune_updates, "log_interval": args.log_interval}
    scale = dataclasses.replace(scale, **{k: v for k, v in overrides.items() if v is not None})
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    check_scale(args.out / "scale.json", scale)
    experiment = Experiment(args, scale)
    print(f"{args.mode} mode: data {args.data_dir}, output {args.out}, "
          f"{args.threads} threads", flush=True)

    last = STAGES.index(args.stop_after)
    if "sentencepiece" not in args.skip:
        experiment.sentencepiece()
    if last >= 1 and "preprocess" not in args.skip:
        experiment.preprocess()
    if last >= 2 and "mle" not in args.skip:
        experiment.train_mle()
    if last >= 3:
        experiment.train_mle_continued()
        experiment.train_maligan()
    rows = experiment.evaluate() if last >= 4 else []
    total = time.time() - started
    pretraining = args.out / "mle" / "pretraining.json"

    results = {
        "mode": args.mode,
        "data_dir": str(args.data_dir),
        "output_dir": str(args.out),
        "threads": args.threads,
        "scale": dataclasses.asdict(scale),
        "pretraining": json.loads(pretraining.read_text()) if pretraining.exists() else None,
        "results": rows,
        "speed": {name: training_speed(experiment.stages, name)
                  for name in ("mle", "mle_continued", "maligan")},
        "stages": experiment.stages,
        "total_seconds": round(total, 1),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if rows:
        print_table(rows)
    if results["pretraining"]:
        took = results["pretraining"]
        print(f"MLE: {took['epochs']} epochs ({took['updates']} updates), best valid at "
              f"epoch {took['best_epoch']} (update {took['best_updates']})")
    for name, speed in results["speed"].items():
        if speed:
            print(f"{name}: {speed['updates']} updates, fairseq ups {speed['fairseq_ups_mean']}, "
                  f"{speed['updates_per_wall_second']} updates per wall-clock second")
    print(f"\ntotal time {total:.0f} s; results in {args.out / 'results.json'}")


if __name__ == "__main__":
    install_excepthook()
    main()
