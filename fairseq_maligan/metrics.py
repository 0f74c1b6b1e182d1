"""Text-GAN quality and diversity metrics: BLEU against a reference set, and self-BLEU.

The text-GAN convention (Texygen, Zhu et al. 2018) scores every generated sentence with
sentence-level BLEU against the *whole* reference set taken as multiple references, then
averages the sentence scores; self-BLEU scores every generated sentence against all the
*other* generated sentences (higher means less diverse). Scores are on a 0..1 scale.

Every sentence score is NLTK's, as Texygen computes it:
``nltk.translate.bleu_score.sentence_bleu(refs, hyp, weights=(1/n,) * n,
smoothing_function=SmoothingFunction().method1)``, for every hypothesis, short ones
included. That is: clipped n-gram precisions of orders 1..n with the denominator at
least 1; an order without a match (an order longer than the hypothesis included) gets
0.1 / denominator; a hypothesis without any unigram match scores 0; the brevity penalty
uses the reference length closest to the hypothesis' (the shorter on a tie). What this
module adds is caching: the references are reduced once to per-n-gram maximum counts and
the set of their lengths, instead of once per scored sentence (NLTK recounts every
reference for every hypothesis), and self-BLEU is computed in one pass over the sentences.

Sentences are split into tokens by ``tokenize``: ``"nltk"`` (default, as in Texygen and
TextGAN-PyTorch) is ``nltk.word_tokenize(text, preserve_line=True)``, the Treebank word
tokenizer (punctuation split off; no punkt data needed); ``"none"`` splits on whitespace.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from nltk import word_tokenize

from .errors import ConfigError

Ngram = tuple[str, ...]

TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "nltk": lambda text: word_tokenize(text, preserve_line=True),
    "none": str.split,
}


def tokenizer(name: str) -> Callable[[str], list[str]]:
    """The tokenizer called ``name`` (a key of ``TOKENIZERS``)."""
    try:
        return TOKENIZERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown BLEU tokenization {name!r}; choose from {', '.join(TOKENIZERS)}"
        ) from None


def _check_order(max_order: int) -> None:
    if max_order < 1:
        raise ConfigError(f"BLEU max n-gram order must be at least 1, got {max_order}")


def _ngram_counts(tokens: Sequence[str], max_order: int) -> Counter[Ngram]:
    """Counts of the n-grams of every order 1..max_order."""
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, max_order + 1)
        for i in range(len(tokens) - n + 1)
    )


def _sentence_bleu(
    ngrams: Counter[Ngram],
    length: int,
    max_count: Callable[[Ngram], int],
    ref_lens: Sequence[int],
    max_order: int,
) -> float:
    """NLTK's method1 sentence BLEU of a hypothesis (its n-gram counts and length).

    ``max_count`` gives an n-gram's largest count in any one reference, ``ref_lens`` the
    candidate reference lengths of the brevity penalty.
    """
    matches = [0] * max_order
    for ngram, count in ngrams.items():
        matches[len(ngram) - 1] += min(count, max_count(ngram))
    if matches[0] == 0:
        return 0.0
    logs = []
    for n, match in enumerate(matches, 1):
        total = max(1, length - n + 1)
        logs.append(math.log(match / total if match else 0.1 / total) / max_order)
    closest = min(ref_lens, key=lambda ref_len: (abs(ref_len - length), ref_len))
    penalty = 1.0 if length > closest else math.exp(1 - closest / length)
    return penalty * math.exp(math.fsum(logs))


class ReferenceBLEU:
    """Sentence BLEU-n of hypotheses against a fixed reference set used as multiple references.

    The references are tokenized and reduced once, here, to the maximum count of every
    n-gram over all references and their distinct lengths (the closest-length rule only
    depends on which lengths occur). ``tokenize`` applies to references and hypotheses.
    """

    def __init__(
        self, references: Sequence[str], max_order: int = 4, tokenize: str = "nltk"
    ) -> None:
        if len(references) == 0:
            raise ConfigError("ReferenceBLEU needs at least one reference sentence")
        _check_order(max_order)
        self.max_order, self.tokenize = max_order, tokenize
        self._split = tokenizer(tokenize)
        self._max_counts: Counter[Ngram] = Counter()
        lengths = set()
        for reference in references:
            tokens = self._split(reference)
            lengths.add(len(tokens))
            for ngram, count in _ngram_counts(tokens, max_order).items():
                if count > self._max_counts[ngram]:
                    self._max_counts[ngram] = count
        self._ref_lens = sorted(lengths)

    def sentence_score(self, hypothesis: str) -> float:
        """BLEU (0..1) of one hypothesis against all references."""
        tokens = self._split(hypothesis)
        return _sentence_bleu(
            _ngram_counts(tokens, self.max_order), len(tokens), self._max_counts.__getitem__,
            self._ref_lens, self.max_order,
        )

    def sentence_scores(self, hypotheses: Sequence[str]) -> list[float]:
        """Each hypothesis's BLEU (0..1) against all references."""
        if len(hypotheses) == 0:
            raise ConfigError("BLEU of an empty list of hypotheses is undefined")
        return [self.sentence_score(h) for h in hypotheses]

    def score(self, hypotheses: Sequence[str]) -> float:
        """Mean sentence BLEU (0..1) of the hypotheses: the text-GAN BLEU-n figure."""
        scores = self.sentence_scores(hypotheses)
        return sum(scores) / len(scores)


def self_bleu(sentences: Sequence[str], max_order: int = 4, tokenize: str = "nltk") -> float:
    """Self-BLEU-n (0..1): mean BLEU of each sentence against all the other sentences
    (the mean of :func:`self_bleu_scores`)."""
    scores = self_bleu_scores(sentences, max_order, tokenize)
    return sum(scores) / len(scores)


def self_bleu_scores(sentences: Sequence[str], max_order: int = 4,
                     tokenize: str = "nltk") -> list[float]:
    """Each sentence's BLEU-n (0..1) against all the other sentences.

    A diversity measure: identical sentences give 1.0. Equal to NLTK's method1
    ``sentence_bleu`` of each sentence with the rest as references, in one pass: for every
    n-gram we keep the largest count, the sentence holding it and the second largest count
    (from another sentence), so the maximum over the *other* sentences is the second count
    for the holder and the largest for everyone else. Lengths are kept with multiplicity so
    that a sentence's own length drops out of the brevity penalty's candidates only when no
    other sentence has it.
    """
    if len(sentences) < 2:
        raise ConfigError(f"self-BLEU needs at least two sentences, got {len(sentences)}")
    _check_order(max_order)
    split = tokenizer(tokenize)
    sentence_ngrams: list[Counter[Ngram]] = []
    sentence_lens: list[int] = []
    top: dict[Ngram, list[int]] = {}  # n-gram -> [largest count, its sentence, second count]
    for i, sentence in enumerate(sentences):
        tokens = split(sentence)
        ngrams = _ngram_counts(tokens, max_order)
        sentence_ngrams.append(ngrams)
        sentence_lens.append(len(tokens))
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

    scores = []
    for i, (ngrams, length) in enumerate(zip(sentence_ngrams, sentence_lens, strict=True)):

        def max_count(ngram: Ngram, i: int = i) -> int:
            best, holder, second = top[ngram]
            return second if holder == i else best

        lens = all_lens if len_counts[length] > 1 else [n for n in all_lens if n != length]
        scores.append(_sentence_bleu(ngrams, length, max_count, lens, max_order))
    return scores


def bootstrap_interval(scores: Sequence[float], resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-sample ``scores``.

    For BLEU the samples are resampled against the fixed reference set; for self-BLEU each
    sample's score against the other samples is resampled as it is (the pool it was
    scored against stays the drawn one), which measures the spread over samples and not
    over pools.
    """
    if len(scores) == 0 or resamples < 1 or not 0 < level < 1:
        raise ConfigError("bootstrap_interval needs scores, resamples >= 1 and 0 < level < 1")
    values = np.asarray(scores, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    means = values[draws].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
