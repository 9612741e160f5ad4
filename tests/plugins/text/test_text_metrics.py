"""Text metrics against hand-computed values and the reference libraries."""

from __future__ import annotations

import math

import pytest

from polydiff.errors import DataError
from polydiff.plugins.text import metrics as M

HYP, REF = "the cat sat on the mat", "the cat sat on a mat"


def test_bleu_equals_sacrebleu_and_the_hand_computed_value():
    sacrebleu = pytest.importorskip("sacrebleu")
    # clipped n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty
    assert M.bleu([HYP], [REF]) == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-9)
    hyps = [HYP, "a dog barks loudly at night"]
    refs = [[REF, "the cat is on the mat"], ["a dog barks at night"]]
    expect = sacrebleu.corpus_bleu(hyps, [[REF, "a dog barks at night"], ["the cat is on the mat", None]]).score
    assert M.bleu(hyps, refs) == expect
    assert M.bleu([HYP], [[HYP]]) == pytest.approx(100.0)
    with pytest.raises(DataError, match="2 reference sets for 1"):
        M.bleu([HYP], [REF, REF])


def test_rouge_l_distinct_entropy_self_bleu():
    pytest.importorskip("rouge_score")
    assert M.rouge_l([HYP], [REF]) == pytest.approx(5 / 6)  # LCS "the cat sat on mat" = 5 of 6 both ways
    assert M.rouge_l([HYP], [["zzz", REF]]) == pytest.approx(5 / 6)  # the best reference counts
    texts = ["a b a b", "a b c"]
    assert M.distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert M.distinct_n(texts, 2) == pytest.approx(3 / 5)  # (a b) (b a) (a b) | (a b) (b c): 3 distinct of 5
    assert M.unigram_entropy(texts) == pytest.approx((math.log(2) + math.log(3)) / 2)
    assert M.unigram_entropy(texts, per_sample=False) == pytest.approx(
        -(3 / 7 * math.log(3 / 7) * 2 + 1 / 7 * math.log(1 / 7)))
    same = M.self_bleu(["the cat sat on the mat"] * 3)
    varied = M.self_bleu(["the cat sat on the mat", "dogs run in the park today", "a red car is fast"])
    assert same == pytest.approx(100.0) and varied < 20
    with pytest.raises(DataError, match="at least two"):
        M.self_bleu(["one"])


def test_mbr_picks_the_consensus_candidate():
    pytest.importorskip("sacrebleu")
    cands = [["how do i learn to cook well", "how can i learn to cook well", "purple monkey dishwasher",
              "how can i learn cooking well"]]
    assert M.mbr_select(cands) == ["how can i learn to cook well"]
    assert M.mbr_select([["only one"]]) == ["only one"]
    with pytest.raises(DataError, match="candidates\\[0\\] is empty"):
        M.mbr_select([[]])
