"""polydiff text plugin: sentence embeddings as conditioning for every domain, text corpora and tokenisers,
masked discrete diffusion of text (MDLM, Sahoo et al. 2024) on the engine's discrete process, continuous diffusion
of learned word vectors (Diffusion-LM, Li et al. 2022; DiffuSeq, Gong et al. 2023) on its Gaussian process, and the
field's metrics (BLEU, ROUGE-L, distinct-n, self-BLEU, entropy, generative perplexity under an autoregressive
judge trained on the task and under SmolLM2-135M, an offline GGUF file).

Components (``polydiff_register``): conditioner ``SentenceEmbedder`` (frozen all-MiniLM-L6-v2, offline; gives
``cond["embedding"]`` to any plugin, which looks it up by name); data module ``TextDataModule`` (plain text,
E2E, DiffuSeq JSONL; word-level or ``tokenizers`` vocabularies); module ``DiffusionLM`` and its backbone
``EmbeddingTransformer``; metric ``text_metrics``; tasks ``text/mdlm_e2e`` and ``text/diffusion_lm_e2e``
(unconditional E2E), ``text/mdlm_qqp`` and ``text/diffuseq_qqp`` (QQP paraphrases, the source kept clean). Samples
are written as text files, one sample a line. Found through the ``polydiff`` entry-point group; ``transformers``,
``tokenizers``, ``sacrebleu`` and ``rouge-score`` load only inside the functions that use them.
"""

from __future__ import annotations

from polydiff.hookspecs import hookimpl
from polydiff.plugins_manager import register_task_configs

DOMAIN = "text"

__all__ = ["DOMAIN", "polydiff_register", "polydiff_write_artifacts", "polydiff_evaluate", "polydiff_commands"]


@hookimpl
def polydiff_register(registry) -> None:
    from .conditioner import SentenceEmbedder
    from .data import TextDataModule
    from .diffusion_lm import DiffusionLM, EmbeddingTransformer
    from .evaluation import evaluate_samples

    registry.add("conditioner", SentenceEmbedder)
    registry.add("datamodule", TextDataModule)
    registry.add("module", DiffusionLM)
    registry.add("backbone", EmbeddingTransformer)
    registry.add("metric", evaluate_samples, name="text_metrics")
    register_task_configs(registry, __name__, "configs", prefix=DOMAIN)


@hookimpl
def polydiff_write_artifacts(domain, samples, out_dir, context):
    if domain != DOMAIN:
        return None
    from .artifacts import write_texts

    prefix = context.get("prefix") or (context.get("stage") or "samples")
    return write_texts(samples, out_dir, prefix, context.get("datamodule"))


@hookimpl
def polydiff_evaluate(domain, samples, datamodule, context):
    if domain != DOMAIN:
        return None
    from .evaluation import evaluate_samples

    return evaluate_samples(samples, datamodule, context)


@hookimpl
def polydiff_commands():
    from .control import add_arguments, run

    return {"control": ("Diffusion-LM classifier-guided control on E2E targets (Li et al. 2022, semantic content)",
                        add_arguments, run)}
