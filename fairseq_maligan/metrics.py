"""Text-GAN quality and diversity metrics: BLEU against a reference set, and self-BLEU.

The text-GAN convention (Texygen, Zhu et al. 2018) scores every generated sentence with
sentence-level BLEU against the *whole* reference set taken as multiple references, then
averages the sentence scores; self-BLEU scores every generated sentence against all the
*other* generated sentences (higher means less diverse). Scores are on a 0..1 scale.

Every number comes from sacrebleu: its n-gram extraction, its clipped-match statistics
(``BLEU._compute_segment_statistics``) and its ``BLEU.compute_bleu``, so a score equals
``BLEU(max_ngram_order=n, effective_order=True, ...).sentence_score(hyp, refs).score / 100``
(``sacrebleu.sentence_bleu`` for n = 4) exactly. What this module adds is caching: the
references are reduced once to per-n-gram maximum counts and a set of lengths, instead of
once per scored sentence, which turns minutes into seconds for 1,000 x 10,000 sentences.

Smoothing defaults to sacrebleu's ``floor`` with value 0.1: an n-gram order without any
match gets precision 0.1 / (number of hypothesis n-grams of that order). That is NLTK's
``SmoothingFunction().method1``, which Texygen uses, so the figures are comparable with
published text-GAN BLEU; sacrebleu's ``exp`` (the ``sentence_bleu`` default) and ``add-k``
are available through ``smooth_method``. With ``effective_order`` (on, as in
``sentence_bleu``) a hypothesis shorter than n tokens is scored on the orders it has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.helpers import extract_all_word_ngrams

from .errors import ConfigError

Ngram = tuple[str, ...]


def make_bleu(
    max_order: int,
    smooth_method: str = "floor",
    smooth_value: float | None = None,
    tokenize: str = "none",
    lowercase: bool = False,
    effective_order: bool = True,
) -> BLEU:
    """The sacrebleu scorer behind both metrics; its options are theirs (see module doc)."""
    if max_order < 1:
        raise ConfigError(f"BLEU max n-gram order must be at least 1, got {max_order}")
    if smooth_method not in BLEU.SMOOTH_DEFAULTS:
        raise ConfigError(
            f"unknown BLEU smoothing {smooth_method!r}; "
            f"choose from {', '.join(BLEU.SMOOTH_DEFAULTS)}"
        )
    return BLEU(
        lowercase=lowercase,
        force=True,
        tokenize=tokenize,
        smooth_method=smooth_method,
        smooth_value=smooth_value,
        max_ngram_order=max_order,
        effective_order=effective_order,
    )


def _score(bleu: BLEU, text: str, ref_ngrams: Mapping[Ngram, int], ref_lens: list[int]) -> float:
    """sacrebleu's sentence BLEU (0..1) of a preprocessed hypothesis from cached references."""
    stats = bleu._compute_segment_statistics(
        text, {"ref_ngrams": ref_ngrams, "ref_lens": ref_lens}
    )
    return bleu._compute_score_from_stats(stats).score / 100.0


class ReferenceBLEU:
    """Sentence BLEU-n of hypotheses against a fixed reference set used as multiple references.

    The references are tokenised and reduced once, here, to the maximum count of every
    n-gram over all references and the distinct reference lengths; sacrebleu's
    closest-length rule (the nearest length, the shorter on a tie) only depends on which
    lengths occur, so the brevity penalty looks at a dozen lengths instead of every reference.

    ``smooth_method``/``smooth_value`` are sacrebleu's (default ``floor`` 0.1, NLTK method1 as
    in Texygen); ``tokenize='none'`` splits on whitespace only, for pre-tokenised text.
    """

    def __init__(self, references: Sequence[str], max_order: int = 4, **options: Any) -> None:
        if len(references) == 0:
            raise ConfigError("ReferenceBLEU needs at least one reference sentence")
        self.max_order = max_order
        self._bleu = make_bleu(max_order, **options)
        info = self._bleu._extract_reference_info(
            [self._bleu._preprocess_segment(ref) for ref in references]
        )
        self._ref_ngrams: Mapping[Ngram, int] = info["ref_ngrams"]
        self._ref_lens: list[int] = sorted(set(info["ref_lens"]))

    def sentence_score(self, hypothesis: str) -> float:
        """BLEU (0..1) of one hypothesis against all references."""
        text = self._bleu._preprocess_segment(hypothesis)
        return _score(self._bleu, text, self._ref_ngrams, self._ref_lens)

    def score(self, hypotheses: Sequence[str]) -> float:
        """Mean sentence BLEU (0..1) of the hypotheses: the text-GAN BLEU-n figure."""
        if len(hypotheses) == 0:
            raise ConfigError("BLEU of an empty list of hypotheses is undefined")
        return sum(self.sentence_score(h) for h in hypotheses) / len(hypotheses)


def self_bleu(sentences: Sequence[str], max_order: int = 4, **options: Any) -> float:
    """Self-BLEU-n (0..1): mean BLEU of each sentence against all the other sentences.

    A diversity measure: identical sentences give 1.0. Equal to calling sacrebleu on each
    sentence with the rest as references, in one pass: for every n-gram we keep the largest
    count, the sentence holding it and the second largest count (from another sentence), so
    the maximum over the *other* sentences is the second count for the holder and the largest
    for everyone else. Lengths are kept with multiplicity so that a sentence's own length
    drops out of the brevity penalty's candidates only when no other sentence has it.
    ``options`` are those of :func:`make_bleu`.
    """
    if len(sentences) < 2:
        raise ConfigError(f"self-BLEU needs at least two sentences, got {len(sentences)}")
    bleu = make_bleu(max_order, **options)
    texts = [bleu._preprocess_segment(s) for s in sentences]

    sentence_ngrams: list[Counter] = []
    sentence_lens: list[int] = []
    top: dict[Ngram, list[int]] = {}  # n-gram -> [largest count, its sentence, second count]
    for i, text in enumerate(texts):
        ngrams, length = extract_all_word_ngrams(text, 1, max_order)
        sentence_ngrams.append(ngrams)
        sentence_lens.append(length)
        for ngram, count in ngrams.items():
            entry = top.get(ngram)
            if entry is None:
                top[ngram] = [count, i, 0]
            elif count > entry[0]:
                top[ngram] = [count, i, entry[0]]
            elif count > entry[2]:
                entry[2] = count
    len_counts = Counter(sentence_lens)
    all_lens = sorted(len_counts)

    total = 0.0
    rows = zip(texts, sentence_ngrams, sentence_lens, strict=True)
    for i, (text, ngrams, length) in enumerate(rows):
        others: dict[Ngram, int] = {}
        for ngram in ngrams:
            best, holder, second = top[ngram]
            count = second if holder == i else best
            if count:
                others[ngram] = count
        lens = all_lens if len_counts[length] > 1 else [n for n in all_lens if n != length]
        total += _score(bleu, text, others, lens)
    return total / len(texts)
