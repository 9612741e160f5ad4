"""Text metrics: quality against references, diversity, and the entropy that keeps perplexity honest.

* :func:`bleu` — corpus BLEU (Papineni et al. 2002) computed by sacrebleu (Post 2018) with its default 13a
  tokenisation, on the 0–100 scale; several references per hypothesis allowed.
* :func:`rouge_l` — ROUGE-L F-measure (Lin 2004, §3.1, longest common subsequence) by ``rouge-score``, the best
  reference per hypothesis, averaged (0–1).
* :func:`distinct_n` — distinct n-grams over all n-grams of the samples (Li et al. 2016, "A Diversity-Promoting
  Objective", §4.3).
* :func:`self_bleu` — each sample's BLEU against all other samples as references, averaged (Zhu et al. 2018,
  "Texygen", §3.3): high means the samples repeat each other.
* :func:`unigram_entropy` — entropy (nats) of the unigram distribution of each sample's tokens, averaged over
  samples (the "entropy" reported beside generative perplexity by Zheng et al. 2024, "Masked Diffusion Models
  are Secretly Time-Agnostic Masked Models", §4: low perplexity with low entropy means repetitive text), or of
  the pooled corpus with ``per_sample=False``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from polydiff.errors import DataError


def _texts(texts, what: str = "texts") -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise DataError(f"{what} must be a list of strings")
    return list(texts)


def _refs(references, n: int) -> list[list[str]]:
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if len(refs) != n:
        raise DataError(f"{len(refs)} reference sets for {n} hypotheses")
    if any(not r for r in refs):
        raise DataError("every hypothesis needs at least one reference")
    return refs


def bleu(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu, 0–100); ``references[i]`` is one string or a list of strings for hypothesis i."""
    import sacrebleu

    hyps = _texts(hypotheses, "hypotheses")
    refs = _refs(references, len(hyps))
    width = max(len(r) for r in refs)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
    return float(sacrebleu.corpus_bleu(hyps, streams).score)


def rouge_l(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Mean over hypotheses of the best ROUGE-L F-measure against their references (0–1)."""
    from rouge_score import rouge_scorer

    hyps = _texts(hypotheses, "hypotheses")
    refs = _refs(references, len(hyps))
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    if not hyps:
        return float("nan")
    return sum(max(scorer.score(r, h)["rougeL"].fmeasure for r in rs) for h, rs in zip(hyps, refs)) / len(hyps)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams over the whitespace tokens of all texts (0 when there are none)."""
    grams = [g for t in _texts(texts) for g in ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str], max_texts: int | None = 500) -> float:
    """Mean sentence BLEU (sacrebleu, exponential smoothing; 0–100) of each text against all the others; only the
    first ``max_texts`` texts are used (the cost is quadratic)."""
    import sacrebleu

    texts = _texts(texts)[:max_texts]
    if len(texts) < 2:
        raise DataError("self-BLEU needs at least two texts")
    scores = [sacrebleu.sentence_bleu(h, texts[:i] + texts[i + 1:]).score for i, h in enumerate(texts)]
    return sum(scores) / len(scores)


def _entropy(counts: Counter) -> float:
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0


def unigram_entropy(texts: Sequence[str], per_sample: bool = True) -> float:
    """Entropy (nats) of the whitespace-token unigram distribution: per sample, averaged (default), or pooled."""
    texts = _texts(texts)
    if not per_sample:
        return _entropy(Counter(w for t in texts for w in t.split()))
    if not texts:
        return float("nan")
    return sum(_entropy(Counter(t.split())) for t in texts) / len(texts)


def mbr_select(candidates: Sequence[Sequence[str]]) -> list[str]:
    """Minimum Bayes risk decoding over several samples per input (Kumar & Byrne 2004; used by DiffuSeq, Gong et
    al. 2022, §4.4): for each input, the candidate with the highest mean sentence BLEU (sacrebleu, smoothed)
    against the other candidates — the sample the others agree with most. One candidate is returned as is."""
    import sacrebleu

    out = []
    for i, cands in enumerate(candidates):
        cands = _texts(cands, f"candidates[{i}]")
        if not cands:
            raise DataError(f"candidates[{i}] is empty")
        if len(cands) == 1:
            out.append(cands[0])
            continue
        scores = [sum(sacrebleu.sentence_bleu(c, [o]).score for j, o in enumerate(cands) if j != k)
                  for k, c in enumerate(cands)]
        out.append(cands[max(range(len(cands)), key=lambda k: scores[k])])
    return out
