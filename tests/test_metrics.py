"""BLEU / self-BLEU: equal to NLTK's method1 sentence_bleu on COCO captions and edge cases."""

import functools
import math
import random

import pytest
from conftest import ROOT
from nltk import word_tokenize
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from fairseq_maligan.errors import ConfigError
from fairseq_maligan.metrics import (
    ReferenceBLEU,
    bootstrap_interval,
    self_bleu,
    self_bleu_scores,
    tokenizer,
)

ORDERS = [2, 3, 4, 5]
COCO = ROOT.parent / "shared" / "data" / "texygen"  # Texygen's MS-COCO captions
TOL = 1e-9


@functools.cache
def nltk_tokens(text: str, tokenize: str) -> tuple[str, ...]:
    """NLTK's own tokenizer (``nltk``) or a whitespace split (``none``), cached."""
    return tuple(word_tokenize(text, preserve_line=True) if tokenize == "nltk" else text.split())


def nltk_bleu(refs: list[str], hyp: str, order: int, tokenize: str = "nltk") -> float:
    """NLTK's sentence BLEU as Texygen calls it: what both metrics must reproduce."""
    return sentence_bleu([nltk_tokens(r, tokenize) for r in refs], nltk_tokens(hyp, tokenize),
                         weights=(1 / order,) * order,
                         smoothing_function=SmoothingFunction().method1)


def nltk_self_bleu(sents: list[str], order: int, tokenize: str = "nltk") -> float:
    scores = [nltk_bleu(sents[:i] + sents[i + 1:], s, order, tokenize)
              for i, s in enumerate(sents)]
    return sum(scores) / len(scores)


def coco_lines(name: str, count: int) -> list[str]:
    path = COCO / name
    if not path.is_file():
        pytest.skip(f"COCO captions not found: {path} (expected in ../shared/data/texygen)")
    return path.read_text().splitlines()[:count]


@pytest.fixture(scope="module")
def coco() -> tuple[list[str], list[str]]:
    """300 test captions as references; 60 train captions plus short cuts of them."""
    refs = coco_lines("test_coco.txt", 300)
    train = coco_lines("image_coco.txt", 60)
    rng = random.Random(0)
    short = [" ".join(c.split()[: rng.randint(1, 4)]) for c in train[:20]]
    return refs, train + short + [refs[5], ""]


@pytest.mark.parametrize("tokenize", ["nltk", "none"])
@pytest.mark.parametrize("order", ORDERS)
def test_reference_bleu_equals_nltk_on_coco(coco, order, tokenize):
    refs, hyps = coco
    metric = ReferenceBLEU(refs, order, tokenize)
    expected = [nltk_bleu(refs, h, order, tokenize) for h in hyps]
    scores = [metric.sentence_score(h) for h in hyps]
    assert scores == pytest.approx(expected, abs=TOL, rel=0)
    assert metric.score(hyps) == pytest.approx(sum(expected) / len(expected), abs=TOL, rel=0)
    assert len(set(expected)) > 50  # real, varied scores, not a run of zeros and ones


@pytest.mark.parametrize("order", ORDERS)
def test_self_bleu_equals_nltk_on_coco(order):
    sents = coco_lines("image_coco.txt", 100)
    sents += [sents[0], sents[7], "a man", "a"]  # duplicates and short sentences
    expected = nltk_self_bleu(sents, order)
    assert self_bleu(sents, order) == pytest.approx(expected, abs=TOL, rel=0)
    assert 0.05 < expected < 0.95


def test_bleu2_by_hand():
    # hyp "the cat sat on the mat" (6 tokens) against both references (7 tokens each):
    #   unigrams: max ref counts the=2 (ref 1), cat=1, on=1, mat=1, sat=0 -> clipped 5 / 6
    #   bigrams:  "the cat", "on the", "the mat" match; "cat sat", "sat on" do not -> 3 / 5
    #   BP: closest ref length 7 > 6 -> exp(1 - 7/6) = exp(-1/6) = 0.8464817...
    #   BLEU-2 = exp(-1/6) * sqrt(5/6 * 3/5) = exp(-1/6) * sqrt(1/2) = 0.5985530
    refs = ["the cat is on the mat today", "there is a cat on the mat"]
    expected = math.exp(-1 / 6) * math.sqrt(0.5)
    assert ReferenceBLEU(refs, 2).sentence_score("the cat sat on the mat") == pytest.approx(
        expected, abs=TOL)
    assert expected == pytest.approx(0.5985530, abs=1e-6)


def test_method1_smoothing_by_hand():
    # hyp "a b c d e" vs refs of lengths 6 and 4: BP 1 (tie 6/4 around 5 -> the shorter, 4);
    # matches 5/5, 4/4, 2/3 ("a b c", "b c d") and 0/2 four-grams -> p4 = 0.1 / 2.
    refs, hyp = ["a b c x d e", "b c d y"], "a b c d e"
    expected = (2 / 3 * 0.05) ** 0.25
    assert ReferenceBLEU(refs, 4).sentence_score(hyp) == pytest.approx(expected, abs=TOL)
    assert nltk_bleu(refs, hyp, 4) == pytest.approx(expected, abs=TOL)


REFS = ["a cat sat here", "the dog ran off now"]


@pytest.mark.parametrize("order", ORDERS)
def test_empty_hypothesis_scores_zero(order):
    assert ReferenceBLEU(REFS, order).sentence_score("") == 0.0 == nltk_bleu(REFS, "", order)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_one_token_hypothesis(order):
    # p1 = 1/1; every higher order has no n-gram: 0.1 / max(1, 0) = 0.1 (not left out, as
    # sacreBLEU's effective order would); BP: closest ref length 4 -> exp(1 - 4/1).
    expected = math.exp(-3) * 0.1 ** ((order - 1) / order)
    assert ReferenceBLEU(REFS, order).sentence_score("cat") == pytest.approx(expected, abs=TOL)
    assert nltk_bleu(REFS, "cat", order) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("order", ORDERS)
def test_no_unigram_match_scores_zero(order):
    assert ReferenceBLEU(REFS, order).sentence_score("zebras graze") == 0.0
    assert nltk_bleu(REFS, "zebras graze", order) == 0


def test_hypothesis_longer_than_every_reference():
    # 7 tokens, refs 4 and 5: BP 1. Matches: 7/7 unigrams, bigrams "a cat", "cat sat",
    # "sat here", "the dog", "dog ran" 5/6, trigrams "a cat sat", "cat sat here",
    # "the dog ran" 3/5, four-grams "a cat sat here" 1/4.
    hyp = "a cat sat here the dog ran"
    expected = (1 * 5 / 6 * 3 / 5 * 1 / 4) ** 0.25
    assert ReferenceBLEU(REFS, 4).sentence_score(hyp) == pytest.approx(expected, abs=TOL)
    assert nltk_bleu(REFS, hyp, 4) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("order", ORDERS)
def test_hypothesis_equal_to_a_reference_scores_one(order):
    assert ReferenceBLEU(REFS, order).sentence_score(REFS[1]) == pytest.approx(1.0, abs=TOL)


@pytest.mark.parametrize("order", ORDERS)
def test_self_bleu_of_identical_sentences_is_one(order):
    assert self_bleu(["the cat sat on the mat"] * 4, order) == pytest.approx(1.0, abs=TOL)


@pytest.mark.parametrize("order", ORDERS)
def test_self_bleu_with_duplicates_equals_nltk(order):
    rng = random.Random(100 + order)
    sents = [" ".join(rng.choice("abcd") for _ in range(rng.randint(1, 8))) for _ in range(14)]
    sents += [sents[0], sents[3], sents[3]]  # duplicates: the top n-gram count is shared
    expected = nltk_self_bleu(sents, order)
    assert self_bleu(sents, order) == pytest.approx(expected, abs=TOL, rel=0)
    # the duplicated sentences score 1 against their copies: more than without them
    assert expected > nltk_self_bleu(sents[:14], order)


def test_nltk_tokenization_splits_punctuation():
    assert tokenizer("nltk")("a man , riding a horse.") == [
        "a", "man", ",", "riding", "a", "horse", "."]
    assert tokenizer("none")("a man , riding a horse.") == [
        "a", "man", ",", "riding", "a", "horse."]
    # applied to hypotheses and references alike, by default
    assert ReferenceBLEU(["a man riding a horse ."], 2).sentence_score(
        "a man riding a horse.") == pytest.approx(1.0, abs=TOL)
    assert ReferenceBLEU(["a man riding a horse ."], 2, "none").sentence_score(
        "a man riding a horse.") < 0.9
    assert self_bleu(["a dog.", "a dog ."], 3) == pytest.approx(1.0, abs=TOL)
    assert self_bleu(["a dog.", "a dog ."], 3, "none") < 0.9


def test_bad_input_is_a_config_error():
    with pytest.raises(ConfigError):
        self_bleu(["only one"])
    with pytest.raises(ConfigError, match="tokenization"):
        ReferenceBLEU(["a b"], tokenize="bogus")
    with pytest.raises(ConfigError):
        ReferenceBLEU([])
    with pytest.raises(ConfigError):
        ReferenceBLEU(["a b"], 0)


def test_bootstrap_interval_of_the_mean():
    """Constant scores give a point; for 0/1 scores the 95 % interval of the mean is close
    to the normal one, p +- 1.96 sqrt(p (1 - p) / n)."""
    assert bootstrap_interval([0.3] * 50) == (pytest.approx(0.3), pytest.approx(0.3))
    scores = [1.0] * 300 + [0.0] * 700
    low, high = bootstrap_interval(scores, resamples=4000, seed=1)
    half = 1.96 * (0.3 * 0.7 / 1000) ** 0.5
    assert low == pytest.approx(0.3 - half, abs=0.004)
    assert high == pytest.approx(0.3 + half, abs=0.004)
    assert bootstrap_interval(scores, seed=1) == bootstrap_interval(scores, seed=1)


def test_per_sentence_scores_average_to_the_figures():
    hypotheses = ["the cat sat on the mat", "a dog ran", "the cat ran on the mat"]
    references = ReferenceBLEU(["the cat sat on a mat", "a dog ran home"], 3)
    scores = references.sentence_scores(hypotheses)
    assert sum(scores) / 3 == pytest.approx(references.score(hypotheses))
    own = self_bleu_scores(hypotheses, 3)
    assert sum(own) / 3 == pytest.approx(self_bleu(hypotheses, 3))
    assert own[1] < own[0]  # the odd sentence out shares the fewest n-grams
