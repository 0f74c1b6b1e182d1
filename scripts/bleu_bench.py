"""Time BLEU-4 of 1,000 sentences against 10,000 references: cached vs naive NLTK.

    python scripts/bleu_bench.py

Random sentences (2,000-word vocabulary, 8-20 tokens, fixed seed). The naive path is
Texygen's: the references are tokenized once, then NLTK's ``sentence_bleu`` (method1
smoothing) is called on the first 5 hypotheses, recounting all the references every call,
and is extrapolated to 1,000; the cached ``ReferenceBLEU`` scores all 1,000 (construction,
tokenization included). Self-BLEU-4 of the 1,000 hypotheses is timed as well.
"""

import random
import time

from nltk import word_tokenize
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from fairseq_maligan.metrics import ReferenceBLEU, self_bleu

VOCAB, HYPS, REFS, NAIVE = 2000, 1000, 10000, 5


def random_sentences(rng: random.Random, count: int) -> list[str]:
    return [" ".join(f"w{rng.randrange(VOCAB)}" for _ in range(rng.randint(8, 20)))
            for _ in range(count)]


def main() -> None:
    rng = random.Random(0)
    refs, hyps = random_sentences(rng, REFS), random_sentences(rng, HYPS)

    start = time.perf_counter()
    metric = ReferenceBLEU(refs, 4)
    built = time.perf_counter() - start
    cached_scores = [metric.sentence_score(h) for h in hyps]
    cached = time.perf_counter() - start

    start = time.perf_counter()
    ref_tokens = [word_tokenize(r, preserve_line=True) for r in refs]
    tokenized = time.perf_counter()
    smoothing = SmoothingFunction().method1
    naive_scores = [
        sentence_bleu(ref_tokens, word_tokenize(h, preserve_line=True), weights=(0.25,) * 4,
                      smoothing_function=smoothing)
        for h in hyps[:NAIVE]
    ]
    naive = tokenized - start + (time.perf_counter() - tokenized) * HYPS / NAIVE

    start = time.perf_counter()
    diversity = self_bleu(hyps, 4)
    self_time = time.perf_counter() - start

    diff = max(abs(a - b) for a, b in zip(cached_scores[:NAIVE], naive_scores, strict=True))
    print(f"cached ReferenceBLEU: {cached:.2f} s for {HYPS} x {REFS} "
          f"({built:.2f} s building the reference cache); BLEU-4 = {sum(cached_scores) / HYPS:.6f}")
    print(f"naive NLTK sentence_bleu: {naive:.1f} s extrapolated from {NAIVE} sentences")
    print(f"ratio naive / cached: {naive / cached:.0f}x; max |difference| on the first {NAIVE}: "
          f"{diff:.1e}")
    print(f"self-BLEU-4 of the {HYPS} hypotheses: {self_time:.2f} s, value {diversity:.6f}")


if __name__ == "__main__":
    main()
