"""BLEU / self-BLEU: a hand-worked case, and the cached paths equal naive sacrebleu calls."""

import math
import random

import pytest
import sacrebleu
from sacrebleu.metrics.bleu import BLEU

from fairseq_maligan.errors import ConfigError
from fairseq_maligan.metrics import ReferenceBLEU, self_bleu

ORDERS = [2, 3, 4, 5]
SMOOTHINGS = ["floor", "exp", "add-k", "none"]


def naive_bleu(hyp: str, refs: list[str], order: int, smooth_method: str = "floor") -> float:
    """sacrebleu re-extracting every reference: what ReferenceBLEU must reproduce."""
    metric = BLEU(tokenize="none", max_ngram_order=order, effective_order=True,
                  smooth_method=smooth_method)
    return metric.sentence_score(hyp, refs).score / 100.0


def random_sentences(rng: random.Random, count: int, min_len: int = 1) -> list[str]:
    """Short sentences over a 4-word vocabulary: many matches, zero precisions and ties."""
    return [" ".join(rng.choice("abcd") for _ in range(rng.randint(min_len, 8)))
            for _ in range(count)]


def test_bleu2_by_hand():
    # hyp "the cat sat on the mat" (6 tokens) against both references (7 tokens each):
    #   unigrams: max ref counts the=2 (ref 1), cat=1, on=1, mat=1, sat=0 -> clipped 5 / 6
    #   bigrams:  "the cat", "on the", "the mat" match; "cat sat", "sat on" do not -> 3 / 5
    #   BP: closest ref length 7 > 6 -> exp(1 - 7/6) = exp(-1/6) = 0.8464817...
    #   BLEU-2 = exp(-1/6) * sqrt(5/6 * 3/5) = exp(-1/6) * sqrt(1/2) = 0.5985530
    # All precisions are non-zero, so the smoothing does not enter.
    refs = ["the cat is on the mat today", "there is a cat on the mat"]
    expected = math.exp(-1 / 6) * math.sqrt(0.5)
    assert ReferenceBLEU(refs, 2).sentence_score("the cat sat on the mat") == pytest.approx(
        expected, abs=1e-6)
    assert expected == pytest.approx(0.5985530, abs=1e-6)


def test_smoothing_is_floor_by_default():
    # hyp "a b c d e" vs refs of lengths 6 and 4: BP 1 (tie 6/4 around 5 -> the shorter, 4);
    # matches 5/5, 4/4, 2/3 ("a b c", "b c d") and 0/2 four-grams.
    # floor 0.1: p4 = 0.1 / 2      -> BLEU-4 = (2/3 * 0.05) ** (1/4) = (1/30) ** (1/4)
    # exp:       p4 = 1 / (2 * 2)  -> BLEU-4 = (2/3 * 0.25) ** (1/4) = (1/6) ** (1/4)
    refs, hyp = ["a b c x d e", "b c d y"], "a b c d e"
    floor = ReferenceBLEU(refs, 4).sentence_score(hyp)
    assert floor == pytest.approx((1 / 30) ** 0.25, abs=1e-6)
    assert floor == sacrebleu.sentence_bleu(
        hyp, refs, tokenize="none", smooth_method="floor").score / 100
    exp = ReferenceBLEU(refs, 4, smooth_method="exp").sentence_score(hyp)
    assert exp == pytest.approx((1 / 6) ** 0.25, abs=1e-6)
    assert exp == sacrebleu.sentence_bleu(hyp, refs, tokenize="none").score / 100


@pytest.mark.parametrize("smooth_method", SMOOTHINGS)
@pytest.mark.parametrize("order", ORDERS)
def test_cached_reference_bleu_equals_naive(order, smooth_method):
    rng = random.Random(order * 10 + SMOOTHINGS.index(smooth_method))
    refs = random_sentences(rng, 12)
    hyps = random_sentences(rng, 15) + ["", refs[0], "z z"]
    metric = ReferenceBLEU(refs, order, smooth_method=smooth_method)
    expected = [naive_bleu(h, refs, order, smooth_method) for h in hyps]
    assert [metric.sentence_score(h) for h in hyps] == expected
    assert metric.score(hyps) == pytest.approx(sum(expected) / len(expected), rel=1e-12)


def test_order4_equals_sacrebleu_sentence_bleu():
    rng = random.Random(7)
    refs = random_sentences(rng, 10)
    metric = ReferenceBLEU(refs, smooth_method="exp")
    for hyp in random_sentences(rng, 10):
        assert metric.sentence_score(hyp) == sacrebleu.sentence_bleu(
            hyp, refs, tokenize="none").score / 100


@pytest.mark.parametrize("order", ORDERS)
def test_self_bleu_of_identical_sentences_is_one(order):
    assert self_bleu(["the cat sat on the mat"] * 4, order) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("smooth_method", ["floor", "exp"])
@pytest.mark.parametrize("order", ORDERS)
def test_self_bleu_equals_naive_leave_one_out(order, smooth_method):
    rng = random.Random(100 + order)
    sents = random_sentences(rng, 14)
    sents += [sents[0], sents[3]]  # duplicates: the top n-gram count is shared
    naive = [naive_bleu(s, sents[:i] + sents[i + 1:], order, smooth_method)
             for i, s in enumerate(sents)]
    assert self_bleu(sents, order, smooth_method=smooth_method) == pytest.approx(
        sum(naive) / len(naive), rel=1e-12)


def test_bad_input_is_a_config_error():
    with pytest.raises(ConfigError):
        self_bleu(["only one"])
    with pytest.raises(ConfigError):
        ReferenceBLEU(["a b"], smooth_method="bogus")
