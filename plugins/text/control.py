"""Classifier-guided control of Diffusion-LM: the E2E "semantic content" task of Li et al. 2022 (§5.2, §7.2).

A target is one (field, value) pair of an E2E meaning representation (MR), e.g. ``food : Italian``; a sample
succeeds when the value's words appear in the generated sentence (Li et al. Table 2, "ctrl"), and fluency is the
perplexity of the samples under a separately trained LM ("lm-score"; here the plugin's autoregressive judge,
:func:`~polydiff.plugins.text.ar.ar_model_for`, instead of their teacher LM).

* :func:`parse_mr` / :func:`load_targets` read MRs ``name : X | area : Y | …`` and Li et al.'s target file
  (``control_target_attribute.json``: one JSON token list ``[field words…, ":", value words…]`` per line);
  :class:`AttributeLabels` holds the value set of every field seen in the training MRs plus ``absent``.
* :class:`AttributeClassifier` is p(field = value | x_t, t): a small transformer on the noisy word-vector
  sequence with one categorical head per field, trained by :func:`train_classifier` on
  x_t = α(t) EMB(w) + σ(t) ε with the trained Diffusion-LM's frozen embedding and process, t uniform (the noisy
  classifier of Dhariwal & Nichol 2021, §4.1, as Li et al. train theirs on the diffusion latents).
* :class:`ControlCallback` is Li et al.'s control step (§5.2), run through the engine's sampler ``callback``
  hook after every ancestral step; :func:`controlled_sample` and :func:`evaluate_control` use it.

Why the callback and not :class:`polydiff.guidance.ClassifierGuidance`: Li et al. do not add a scaled gradient
to the model's score (Dhariwal & Nichol's Alg. 2); they optimise the sampled state x_{t−1} itself with several
Adagrad steps. The callback receives that state, its time and (α, σ); the noise level of the step that produced
it follows from two consecutive calls, so the callback suffices.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from polydiff.backbones import ConditionEmbedding
from polydiff.errors import ConfigError, DataError, ShapeError

from .diffusion_lm import find_embedder

Tensor = torch.Tensor
ABSENT = "absent"


# -- meaning representations and targets ---------------------------------------------------------------
def parse_mr(mr: str, where: str = "meaning representation") -> list[tuple[str, str]]:
    """``"name : Alimentum | area : city centre"`` -> ``[("name", "Alimentum"), ("area", "city centre")]``.
    A part without ``:`` or with an empty field/value is a :class:`DataError` naming ``where``."""
    pairs = []
    for part in mr.split("|"):
        field, sep, value = part.partition(":")
        field, value = " ".join(field.split()), " ".join(value.split())
        if not sep or not field or not value:
            raise DataError(f"{where}: {part.strip()!r} is not 'field : value' (in {mr.strip()!r})")
        pairs.append((field, value))
    return pairs


def load_targets(path: str | Path) -> list[tuple[str, str]]:
    """Li et al.'s semantic-content targets: per non-empty line a JSON list of strings
    ``[field words…, ":", value words…]`` -> (field, value). Every bad line is named in one :class:`DataError`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"targets file {p} does not exist")
    targets, bad = [], []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            tokens = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"line {n}: malformed JSON ({exc.msg})")
            continue
        if not (isinstance(tokens, list) and all(isinstance(s, str) for s in tokens) and ":" in tokens):
            bad.append(f"line {n}: expected a JSON list of strings with ':' between field and value")
            continue
        k = tokens.index(":")
        field, value = " ".join(tokens[:k]), " ".join(tokens[k + 1:])
        if not field or not value:
            bad.append(f"line {n}: empty field or value")
            continue
        targets.append((field, value))
    if bad:
        raise DataError(f"{p}: {len(bad)} bad line(s): " + "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else ""))
    if not targets:
        raise DataError(f"{p}: no targets (the file holds only empty lines)")
    return targets


@dataclass(frozen=True)
class AttributeLabels:
    """Per field, its classes: index 0 is ``absent``, then the values seen in the training MRs (sorted)."""

    fields: dict[str, list[str]]

    @classmethod
    def from_records(cls, records: Sequence) -> "AttributeLabels":
        values: dict[str, set[str]] = {}
        for r in records:
            if not r.source:
                raise DataError(f"line {r.line}: record has no meaning representation (load the data as format e2e)")
            for field, value in parse_mr(r.source, f"line {r.line}"):
                values.setdefault(field, set()).add(value)
        if not values:
            raise DataError("no meaning representations to take the attribute labels from")
        return cls({f: [ABSENT] + sorted(v) for f, v in values.items()})

    def index(self, field: str, value: str) -> int:
        if field not in self.fields:
            raise ConfigError(f"target field {field!r} is not an E2E field of the training data; known: "
                              f"{sorted(self.fields)}")
        if value not in self.fields[field]:
            raise ConfigError(f"target value {value!r} of field {field!r} never occurs in the training data")
        return self.fields[field].index(value)

    def encode(self, records: Sequence) -> Tensor:
        """(N, F) class indices of the records' MRs, in the order of :attr:`fields` (0 = absent)."""
        out = torch.zeros(len(records), len(self.fields), dtype=torch.long)
        cols = {f: j for j, f in enumerate(self.fields)}
        for i, r in enumerate(records):
            for field, value in parse_mr(r.source or "", f"line {r.line}"):
                if field in cols and value in self.fields[field]:
                    out[i, cols[field]] = self.fields[field].index(value)
        return out


# -- the noisy attribute classifier ------------------------------------------------------------------
class AttributeClassifier(nn.Module):
    """p(field = value | x_t, t) for every E2E field: x_t (batch, L, d) word vectors, t (batch,) in [0, 1],
    presence (batch, L) bool -> {field: logits (batch, K_field)}.

    Linear up-projection, learned positions and the time embedding (:class:`polydiff.backbones.ConditionEmbedding`)
    added to every position, a pre-LN transformer encoder that ignores padding, masked mean pooling over present
    positions, and one linear head per field (Dhariwal & Nichol 2021 §4.1: a classifier of noisy inputs with the
    diffusion time as input)."""

    def __init__(self, labels: AttributeLabels, embed_dim: int, seq_len: int, dim: int = 64, depth: int = 2,
                 heads: int = 4):
        super().__init__()
        if dim % heads or embed_dim < 1 or seq_len < 1:
            raise ConfigError(f"AttributeClassifier needs dim divisible by heads, embed_dim >= 1, seq_len >= 1; got "
                              f"{dim}/{heads}, {embed_dim}, {seq_len}")
        self.labels, self.embed_dim, self.seq_len = labels, int(embed_dim), int(seq_len)
        self.config = {"embed_dim": self.embed_dim, "seq_len": self.seq_len, "dim": dim, "depth": depth,
                       "heads": heads}
        self.up = nn.Linear(embed_dim, dim)
        self.position = nn.Parameter(torch.randn(seq_len, dim) / math.sqrt(dim))
        self.time = ConditionEmbedding(dim, dim, "sinusoidal")
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, 0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.sizes = [len(v) for v in labels.fields.values()]
        self.head = nn.Linear(dim, sum(self.sizes))

    def forward(self, x: Tensor, t: Tensor, presence: Tensor | None = None) -> dict[str, Tensor]:
        if x.ndim != 3 or x.shape[1:] != (self.seq_len, self.embed_dim):
            raise ShapeError(f"AttributeClassifier input has shape {tuple(x.shape)}; expected (batch, "
                             f"{self.seq_len}, {self.embed_dim})")
        presence = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if presence is None else presence.bool()
        h = self.up(x) + self.position + self.time(t.to(x.dtype), None, x.shape[0])[:, None, :]
        h = self.norm(self.encoder(h, src_key_padding_mask=~presence))
        w = presence.to(h.dtype).unsqueeze(-1)
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)
        return dict(zip(self.labels.fields, self.head(pooled).split(self.sizes, -1)))

    def log_prob(self, x: Tensor, t: Tensor, constraints: Mapping[str, Tensor], presence: Tensor | None = None) -> Tensor:
        """Σ_field log p(field = constraints[field] | x, t), (batch,); ``constraints`` maps fields to (batch,) ids."""
        logits = self(x, t, presence)
        return sum(torch.log_softmax(logits[f], -1).gather(-1, c.view(-1, 1).to(x.device)).squeeze(-1)
                   for f, c in constraints.items())

    # -- files -----------------------------------------------------------------------------------------
    def save(self, path: str | Path, key: str = "") -> Path:
        """Written atomically (:func:`polydiff.checkpointing.atomic_torch_save`)."""
        from polydiff.checkpointing import atomic_torch_save

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return atomic_torch_save({"config": self.config, "labels": self.labels.fields, "key": key,
                                  "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path) -> tuple["AttributeClassifier", str]:
        """(classifier, key) from :meth:`save`'s file, read with ``weights_only=True``."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model = cls(AttributeLabels(dict(blob["labels"])), **blob["config"])
            model.load_state_dict(blob["state_dict"])
        except (OSError, EOFError, pickle.UnpicklingError, RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: not a readable attribute classifier ({type(exc).__name__}: {exc})") from None
        return model.eval(), str(blob.get("key", ""))


def classifier_key(module, labels: AttributeLabels, **settings) -> str:
    """Fingerprint of what a classifier was trained for: the Diffusion-LM's embedding, the labels, the settings."""
    w = find_embedder(module.sampling_model()).word_embedding.weight.detach().cpu().contiguous()
    return hashlib.sha256(w.numpy().tobytes() + repr((labels.fields, sorted(settings.items()))).encode()).hexdigest()[:16]


def train_classifier(module, datamodule, steps: int = 2000, batch_size: int = 64, lr: float = 1e-3, dim: int = 64,
                     depth: int = 2, heads: int = 4, seed: int = 0) -> AttributeClassifier:
    """Train an :class:`AttributeClassifier` on the data module's training rows: x_t = q_sample(EMB(w), t) with
    the Diffusion-LM's frozen (EMA) embedding and its process, t uniform on [t_min, 1], cross-entropy summed over
    fields (``absent`` included), AdamW, padding masked out."""
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"classifier steps and batch_size must be >= 1; got {steps}, {batch_size}")
    if datamodule.source:
        raise ConfigError("control needs an unconditional Diffusion-LM data module (source: false)")
    records = datamodule.train_records
    labels = AttributeLabels.from_records(records)
    y = labels.encode(records)
    rows = datamodule.require_set("train_set").fields
    ids, presence = rows["x"], rows["presence"]
    emb = find_embedder(module.sampling_model())
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = AttributeClassifier(labels, emb.embed_dim, emb.seq_len, dim, depth, heads)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, ids.shape[0], (batch_size,), generator=g)
        with torch.no_grad():
            x0 = emb.embed(ids[idx].to(emb.word_embedding.weight.device)).cpu().float()
        t = module.process.sample_time(batch_size, generator=g).float()
        xt = module.process.q_sample(x0, t, torch.randn(x0.shape, generator=g)).float()
        logits = model(xt, t, presence[idx])
        loss = sum(nn.functional.cross_entropy(logits[f], y[idx, j]) for j, f in enumerate(labels.fields))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def classifier_for(module, datamodule, path: str | Path, **settings) -> AttributeClassifier:
    """The classifier cached at ``path`` when it was trained for this model, labels and settings; else trained
    (:func:`train_classifier`) and saved there."""
    labels = AttributeLabels.from_records(datamodule.train_records)
    key = classifier_key(module, labels, **settings)
    if Path(path).is_file():
        try:
            model, stored = AttributeClassifier.load(path)
        except DataError:  # a damaged cache is retrained and replaced
            stored = None
        if stored == key:
            return model
    model = train_classifier(module, datamodule, **settings)
    model.save(path, key)
    return model


# -- control -----------------------------------------------------------------------------------------
class ControlCallback:
    """Li et al. 2022 §5.2 as a sampler ``callback``: after the ancestral step t → s has drawn x_s (= x⁰), take
    ``grad_steps`` Adagrad steps (lr ``step_size``; a fresh Adagrad state per diffusion step) on x_s to maximise

        J(x) = log p(c | x, s) − λ ‖x − x⁰‖² / (2 β̃),

    per sample, with β̃ = σ²_{t|s} σ_s² / σ_t² the variance of the step (Ho et al. 2020, Eq. 7) and
    σ²_{t|s} = σ_t² − (α_t/α_s)² σ_s²; the updated x replaces x_s and the chain goes on (the clamping trick stays
    in the model's x̂₀ map). Departure from the paper: Li et al. write the fluency term λ log p(x_{t−1} | x_t), a
    Gaussian centred at the model's mean μ_θ(x_t, t); this callback does not see μ_θ, so it anchors at the drawn
    state x⁰ = μ_θ + √β̃ z instead — the same quadratic penalty on moving x, shifted by the step's own noise (the
    gradient at the start is ∇ log p(c | x) alone). Steps that land on σ_s = 0 (the final jump to the data, where
    β̃ = 0) are left unchanged. The first step's start is taken at t = 1 (the engine's default grid start).

    ``constraints`` maps fields to (batch,) class ids (:meth:`AttributeLabels.index`); ``presence`` (batch, L)
    is the samples' padding mask (padding positions are never changed). ``trace`` (a list) collects the mean
    log p(c | x) before and after each update."""

    def __init__(self, classifier: AttributeClassifier, process, constraints: Mapping[str, Tensor], presence: Tensor,
                 grad_steps: int = 3, step_size: float = 0.1, lam: float = 0.01, trace: list | None = None):
        if grad_steps < 0 or step_size <= 0 or lam < 0:
            raise ConfigError(f"control needs grad_steps >= 0, step_size > 0 and lam >= 0; got {grad_steps}, "
                              f"{step_size}, {lam}")
        unknown = [f for f in constraints if f not in classifier.labels.fields]
        if unknown:
            raise ConfigError(f"constraint field(s) {unknown} are not fields of the classifier "
                              f"({sorted(classifier.labels.fields)})")
        self.classifier, self.process, self.presence = classifier, process, presence.bool()
        self.constraints = {f: torch.as_tensor(c).long() for f, c in constraints.items()}
        self.grad_steps, self.step_size, self.lam, self.trace = int(grad_steps), float(step_size), float(lam), trace
        self.prev: tuple[Tensor, Tensor] | None = None

    def step_variance(self, i: int, alpha: Tensor, sigma: Tensor) -> Tensor:
        """β̃ of the step that arrived at (α_s, σ_s) from the previous call's (α_t, σ_t), (batch,) float64."""
        if i == 0 or self.prev is None:
            a_t, s_t = self.process.alpha_sigma(torch.ones_like(alpha, dtype=torch.float64))
        else:
            a_t, s_t = self.prev
        a_s, s_s = alpha.double(), sigma.double()
        self.prev = (a_s, s_s)
        var_ts = (s_t ** 2 - (a_t / a_s) ** 2 * s_s ** 2).clamp_min(0.0)
        return var_ts * s_s ** 2 / s_t ** 2

    def __call__(self, info: Mapping) -> Tensor | None:
        x0 = info["x"]
        var = self.step_variance(int(info["i"]), info["alpha"], info["sigma"])
        if self.grad_steps == 0 or bool((var <= 0).all()):
            return None
        t = info["t"].to(x0.dtype)
        inv = (self.lam / (2 * var.clamp_min(1e-30))).to(x0.dtype).view(-1, 1, 1) * (var > 0).view(-1, 1, 1)
        keep = self.presence.to(x0.device).unsqueeze(-1)
        x = x0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adagrad([x], lr=self.step_size)
        with torch.enable_grad():
            for k in range(self.grad_steps):
                logp = self.classifier.log_prob(x, t, self.constraints, self.presence)
                objective = logp.sum() - (inv * (x - x0) ** 2 * keep).sum()
                (grad,) = torch.autograd.grad(objective, x)
                x.grad = -(grad * keep * (var > 0).view(-1, 1, 1))  # Adagrad minimises −J
                opt.step()
                if self.trace is not None and k == 0:
                    self.trace.append(float(logp.detach().mean()))
        if self.trace is not None:
            with torch.no_grad():
                self.trace.append(float(self.classifier.log_prob(x, t, self.constraints, self.presence).mean()))
        return x.detach()


def controlled_sample(module, classifier: AttributeClassifier | None, presence: Tensor,
                      constraints: Mapping[str, Tensor] | None = None, generator: torch.Generator | None = None,
                      steps: int | None = None, grad_steps: int = 3, step_size: float = 0.1, lam: float = 0.01,
                      trace: list | None = None, **kw) -> Tensor:
    """Ids (n, L) from a :class:`~polydiff.plugins.text.diffusion_lm.DiffusionLM` by ancestral sampling with the
    clamping trick and, when ``classifier`` is given, :class:`ControlCallback` after every step; ``presence``
    (n, L) fixes the lengths. Without a classifier: the unguided baseline on the same noise."""
    n = presence.shape[0]
    if classifier is not None:
        classifier.to(module.device)
        kw["callback"] = ControlCallback(classifier, module.process, constraints or {}, presence, grad_steps,
                                         step_size, lam, trace)
    kw.setdefault("sampler", "ddpm")
    out = module.sample(n, generator=generator, presence=presence, steps=steps, progress=False, **kw)
    return out["x"]


# -- evaluation --------------------------------------------------------------------------------------
def contains_value(text: str, value: str) -> bool:
    """Li et al.'s success: the value's words appear, in order and contiguous, among the text's tokens
    (case-insensitive, whitespace tokens)."""
    words, tokens = value.lower().split(), text.lower().split()
    return any(tokens[i:i + len(words)] == words for i in range(len(tokens) - len(words) + 1))


def evaluate_control(module, classifier: AttributeClassifier, datamodule, targets: Sequence[tuple[str, str]],
                     per_target: int = 16, seed: int = 0, steps: int | None = None, grad_steps: int = 3,
                     step_size: float = 0.1, lam: float = 0.01, ar_config=None, cache_dir: str | Path | None = None,
                     judge=None) -> dict:
    """For each target (field, value): ``per_target`` controlled samples and as many unguided ones on the same
    noise and lengths (seed ``seed + k`` for target k); success = :func:`contains_value`, fluency = perplexity of
    the sampled ids under ``judge`` (a trained AR model; default the plugin's judge,
    :func:`~polydiff.plugins.text.ar.ar_model_for`). Returns ``{"targets": [per-target dicts with texts],
    "summary": {...}}``."""
    from .ar import ARConfig, ar_model_for, perplexity

    if per_target < 1 or not targets:
        raise ConfigError(f"evaluate_control needs per_target >= 1 and at least one target; got {per_target}, "
                          f"{len(targets)} target(s)")
    ids = [classifier.labels.index(f, v) for f, v in targets]  # unknown targets fail before any sampling
    if judge is None:
        judge = ar_model_for(datamodule, ar_config or ARConfig(steps=datamodule.judge_steps), cache_dir)
    bos = datamodule.tokenizer.bos_id
    results, rows = [], {"guided": [], "unguided": [], "presence": []}
    for k, ((field, value), c) in enumerate(zip(targets, ids)):
        g = torch.Generator().manual_seed(seed + k)
        presence = datamodule.sample_inputs(per_target, g)["presence"]
        entry = {"field": field, "value": value}
        for name, clf in (("guided", classifier), ("unguided", None)):
            x = controlled_sample(module, clf, presence, {field: torch.full((per_target,), c)},
                                  torch.Generator().manual_seed(seed + k), steps, grad_steps, step_size, lam).cpu()
            texts = datamodule.decode_rows(x, presence)
            rows[name].append(x)
            entry[f"{name}_success"] = sum(contains_value(s, value) for s in texts) / per_target
            entry[f"{name}_texts"] = texts
        rows["presence"].append(presence)
        results.append(entry)
    presence = torch.cat(rows["presence"])
    summary = {"targets": len(targets), "per_target": per_target, "grad_steps": grad_steps, "step_size": step_size,
               "lam": lam, "steps": int(steps or module.hparams.sample_steps)}
    for name in ("guided", "unguided"):
        summary[f"{name}_success"] = sum(r[f"{name}_success"] for r in results) / len(results)
        summary[f"{name}_ppl_ar"] = perplexity(judge, torch.cat(rows[name]).clamp_min(0), presence, bos)
    return {"targets": results, "summary": summary}


# -- command line ------------------------------------------------------------------------------------
def usable_targets(targets: Sequence[tuple[str, str]], labels: AttributeLabels, num: int | None = None
                   ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(chosen, skipped): targets whose value occurs in the training MRs (a classifier can only be trained for
    those) — ``num`` of them evenly spaced over the file, so that every field is represented — and the rest."""
    ok = [t for t in targets if t[0] in labels.fields and t[1] in labels.fields[t[0]]]
    skipped = [t for t in targets if t not in ok]
    if num is not None and num < len(ok):
        ok = [ok[int(i * len(ok) / num)] for i in range(num)]
    return ok, skipped


def add_arguments(p) -> None:
    p.add_argument("--ckpt", required=True, help="Diffusion-LM checkpoint (trained on text/diffusion_lm_e2e)")
    p.add_argument("--targets", required=True, help="control_target_attribute.json of Li et al. (one JSON token "
                   "list [field, ':', value words] per line)")
    p.add_argument("--num-targets", type=int, default=None, help="number of targets (default: all usable ones)")
    p.add_argument("--per-target", type=int, default=16, help="samples per target (guided and as many unguided)")
    p.add_argument("--out", required=True, help="output folder: texts_guided.txt, texts_unguided.txt, metrics.json")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    p.add_argument("--grad-steps", type=int, default=3, help="Adagrad steps per diffusion step (Li et al.: 3)")
    p.add_argument("--step-size", type=float, default=0.1, help="Adagrad learning rate on x_{t-1}")
    p.add_argument("--lam", type=float, default=0.01, help="fluency weight λ")
    p.add_argument("--classifier-steps", type=int, default=2000, help="training steps of the attribute classifier "
                   "(cached beside the checkpoint)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from polydiff.cli import load_for_sampling
    from polydiff.io import atomic_write_text

    from .diffusion_lm import DiffusionLM

    if args.per_target < 1 or (args.num_targets is not None and args.num_targets < 1):
        raise ConfigError(f"--per-target and --num-targets must be >= 1; got {args.per_target}, {args.num_targets}")
    module, dm = load_for_sampling(args.ckpt)
    if not isinstance(module, DiffusionLM) or dm is None:
        raise ConfigError(f"{args.ckpt}: control needs a Diffusion-LM checkpoint whose E2E data can be read "
                          f"(got {type(module).__name__}, data module {type(dm).__name__})")
    labels = AttributeLabels.from_records(dm.train_records)
    targets, skipped = usable_targets(load_targets(args.targets), labels, args.num_targets)
    console = Console(stderr=True)
    if skipped:
        console.print(f"{len(skipped)} target(s) skipped: value never seen in the training MRs "
                      f"(first: {skipped[0][0]} : {skipped[0][1]})")
    if not targets:
        raise DataError(f"{args.targets}: no target value occurs in the training data of {args.ckpt}")
    path = Path(str(args.ckpt) + ".control_classifier.pt")
    with console.status("attribute classifier (trained once, cached beside the checkpoint) ..."):
        clf = classifier_for(module, dm, path, steps=args.classifier_steps, seed=args.seed)
    with console.status(f"sampling {len(targets)} target(s) x {args.per_target} (guided and unguided) ..."):
        res = evaluate_control(module, clf, dm, targets, args.per_target, args.seed, args.steps, args.grad_steps,
                               args.step_size, args.lam)
    table = Table(title="Diffusion-LM semantic-content control (success = value words in the text)")
    for col in ("target", "guided", "unguided"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for r in res["targets"]:
        table.add_row(f"{r['field']} : {r['value']}", f"{r['guided_success']:.2f}", f"{r['unguided_success']:.2f}")
    s = res["summary"]
    table.add_row("[bold]mean success[/bold]", f"{s['guided_success']:.3f}", f"{s['unguided_success']:.3f}")
    table.add_row("[bold]AR-judge perplexity[/bold]", f"{s['guided_ppl_ar']:.2f}", f"{s['unguided_ppl_ar']:.2f}")
    Console().print(table)
    out = Path(args.out)
    for name in ("guided", "unguided"):
        lines = [f"{r['field']} : {r['value']}\t{t}" for r in res["targets"] for t in r[f"{name}_texts"]]
        atomic_write_text(out / f"texts_{name}.txt", "\n".join(lines) + "\n")
    metrics = {"summary": s, "skipped_targets": [list(t) for t in skipped],
               "targets": [{k: v for k, v in r.items() if not k.endswith("_texts")} for r in res["targets"]]}
    print(atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False) + "\n"))
    return 0


__all__ = ["ABSENT", "parse_mr", "load_targets", "AttributeLabels", "AttributeClassifier", "classifier_key",
           "train_classifier", "classifier_for", "ControlCallback", "controlled_sample", "contains_value",
           "evaluate_control", "usable_targets"]
