"""SSSD^S4: diffusion imputation and forecasting with structured state-space layers
(Alcaraz & Strodthoff 2022, "Diffusion-based time series imputation and forecasting with structured
state space models", TMLR; §3.3 and Fig. 2; official code AI4HealthUOL/SSSD ``SSSDS4Imputer``).

**S4 layer.** A state-space model x'(t) = A x(t) + B u(t), y = C x + D u per channel (Gu et al. 2022,
"Efficiently modeling long sequences with structured state spaces", ICLR, Eq. 1), discretised with
step Δ and applied as a convolution y = K ∗ u + D u with kernel K_l = C Ā^l B̄ (Eq. 4–5), computed in
closed form and applied by FFT in O(L log L). Variant used here: **S4D-LegS** (Gu et al. 2022b,
"On the parameterization and initialization of diagonal state space models", NeurIPS, §3 and
Table 1): A is the diagonal of eigenvalues of the normal part of HiPPO-LegS (Gu et al. 2020;
A_LegS = A_N − P Pᵀ with A_N normal, eigenvalues −½ + iω), B the LegS input vector in that
eigenbasis, zero-order hold Ā = exp(ΔA), B̄ = (Ā − 1)/A · B, K_l = 2 Re(Σ_n C_n B̄_n Ā_n^l) over the
N/2 conjugate-pair representatives. This drops the low-rank term of the full DPLR S4 (a choice the S4D
paper shows loses nothing on long-range benchmarks) and needs no Cauchy kernel or custom extension.
Δ is drawn per channel, log-uniform in [1e-3, 1e-1] (S4 App. C); as in SSSD's S4 (``trainable=None``)
Λ, B and Δ stay fixed and only C, D and the output layer learn.
**Bidirectional** (SSSD uses ``bidirectional=True``): two output maps C over the same state give a
causal kernel and a strictly anti-causal one (lags ≥ 1, as in S4's bidirectional convolution); their
outputs add. Then GELU, dropout, a position-wise linear layer, residual connection and LayerNorm
(SSSD's ``S4Layer``).

**SSSD^S4 network** (Fig. 2; official defaults in brackets, the CPU configs use fewer): input 1×1
conv K → C [256] + ReLU; diffusion-step embedding sinusoid(128) → 512 → 512 (SiLU); R residual layers
[36], each: + Linear(512 → C) of the step embedding, conv(3) C → 2C, S4 layer, + 1×1 conv of the
conditioning (observed ⊙ mask ‖ mask, 2K channels) to 2C, S4 layer, gated tanh·σ, 1×1 convs to the
residual and the skip; skips summed · √(1/R), 1×1 conv + ReLU, zero-initialised 1×1 conv to K. Every conv
but the last is weight-normalised (Salimans & Kingma 2016) from PyTorch's default initialisation, as in
the official code (whose ``kaiming_normal_`` after ``weight_norm`` is overwritten by the reparameterisation).
Diffusion: T = 200, linear β from 1e-4 to 0.02 (§4.1) = ``VP("linear", num_steps=200, beta_min=0.02,
beta_max=4.0)`` (polydiff's linear schedule holds T·β fixed), ε-parameterisation; the network input
is the noisy series with the known entries replaced by their clean values (their
``only_generate_missing``), and the loss counts only the targets.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from polydiff import VP, ConfigError, ShapeError
from polydiff.backbones import Conv1x1

Tensor = torch.Tensor


def sssd_process(num_steps: int = 200, beta_start: float = 1e-4, beta_end: float = 0.02) -> VP:
    """SSSD's forward process: DDPM with linear β_1 = 1e-4 … β_T = 0.02, T = 200 (§4.1)."""
    return VP("linear", num_steps=num_steps, beta_min=beta_start * num_steps, beta_max=beta_end * num_steps)


def hippo_legs(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HiPPO-LegS (Gu et al. 2020, Thm. 2; S4 Eq. 2): A_nk = −√(2n+1)√(2k+1) (n > k), −(n+1) (n = k),
    0 (n < k); B_n = √(2n+1); low-rank P_n = √(n + ½) with A + P Pᵀ normal."""
    q = np.sqrt(2 * np.arange(N) + 1.0)
    A = -np.tril(np.outer(q, q), -1) - np.diag(np.arange(N) + 1.0)
    P = np.sqrt(np.arange(N) + 0.5)
    return A, q.copy(), P


def s4d_legs_init(N: int) -> tuple[Tensor, Tensor]:
    """Eigenvalues Λ (N/2 with Im ≥ 0, real part −½) of the normal part of HiPPO-LegS and B in that
    eigenbasis (S4D-LegS, Gu et al. 2022b §3.1), as complex128 tensors."""
    if N % 2:
        raise ConfigError(f"state size N must be even (conjugate pairs), got {N}")
    A, B, P = hippo_legs(N)
    normal = A + np.outer(P, P)                       # = −½ I + skew-symmetric
    skew = normal + 0.5 * np.eye(N)
    w, V = np.linalg.eigh(-1j * skew)                 # skew = i · Hermitian: eigenvalues i w
    lam = -0.5 + 1j * w
    keep = np.argsort(-w)[: N // 2]                   # one of each conjugate pair (Im > 0)
    Bv = V.conj().T @ B
    return torch.from_numpy(lam[keep]).to(torch.complex128), torch.from_numpy(Bv[keep]).to(torch.complex128)


class S4DKernel(nn.Module):
    """Diagonal SSM kernels K (kernels, channels, L): ``kernels`` output maps C (learned) over one state
    per channel — Λ, B and Δ shared by the kernels and kept fixed at their initialisation, as in SSSD's
    S4 (``trainable=None``: only C, D and the output layer learn). ZOH discretisation (S4D §3)."""

    def __init__(self, channels: int, N: int = 64, kernels: int = 1, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 generator: torch.Generator | None = None):
        super().__init__()
        lam, b = s4d_legs_init(N)
        H = channels
        self.register_buffer("log_neg_re", torch.log(-lam.real).float().repeat(H, 1))   # Re Λ = −exp(·)
        self.register_buffer("im", lam.imag.float().repeat(H, 1))
        self.register_buffer("B", torch.view_as_real(b.to(torch.complex64)).repeat(H, 1, 1))
        c = torch.randn(kernels, H, N // 2, 2, generator=generator) * math.sqrt(0.5)
        self.C = nn.Parameter(c)
        u = torch.rand(H, generator=generator)
        self.register_buffer("log_dt", math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min)))

    def discrete(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(ΔΛ, Ā, B̄) complex (channels, N/2) and C (kernels, channels, N/2)."""
        lam = torch.complex(-torch.exp(self.log_neg_re), self.im)
        dt_lam = torch.exp(self.log_dt)[:, None] * lam
        dA = torch.exp(dt_lam)
        dB = (dA - 1) / lam * torch.view_as_complex(self.B.contiguous())
        return dt_lam, dA, dB, torch.view_as_complex(self.C.contiguous())

    def forward(self, L: int) -> Tensor:
        """K_l = 2 Re Σ_n C_n B̄_n Ā_n^l (conjugate pairs), with Ā^l = e^{lΔΛ} in real arithmetic (a
        complex ``exp`` on CPU is an order of magnitude slower than real exp/cos/sin)."""
        dt_lam, _, dB, C = self.discrete()
        l = torch.arange(L, device=dt_lam.device, dtype=dt_lam.real.dtype)
        mag = torch.exp(dt_lam.real[..., None] * l)                    # |Ā^l|, (H, N/2, L)
        cos, sin = mag * torch.cos(dt_lam.imag[..., None] * l), mag * torch.sin(dt_lam.imag[..., None] * l)
        w = C * dB
        # broadcast-and-sum: as an einsum this becomes many tiny matrix products, slow on CPU
        return 2 * (w.real[..., None] * cos - w.imag[..., None] * sin).sum(-2)


def fft_conv(u: Tensor, k: Tensor) -> Tensor:
    """Causal convolution y_l = Σ_{j ≤ l} k_j u_{l−j} of u (B, H, L) with k (H, L) by FFT, zero-padded to 2L."""
    L = u.shape[-1]
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)
    return y[..., :L]


class S4(nn.Module):
    """Bidirectional S4D-LegS block on (B, H, L): y = GELU(K_fwd ∗ u + K_bwd ⋆ u + D u) → dropout →
    Linear(H → H), where the backward kernel looks strictly ahead, (K_bwd ⋆ u)_l = Σ_{m ≥ 0} K_bwd,m u_{l+1+m}
    (S4's bidirectional kernel: the second half of the channels, flipped and placed after the causal one)."""

    def __init__(self, channels: int, N: int = 64, bidirectional: bool = True, dropout: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.bidirectional = bidirectional
        self.kernel = S4DKernel(channels, N, kernels=2 if bidirectional else 1, generator=generator)
        self.D = nn.Parameter(torch.randn(channels, generator=generator))
        self.dropout = nn.Dropout(dropout)
        self.output_linear = Conv1x1(channels, channels)

    def ssm(self, u: Tensor) -> Tensor:
        """The linear part K ∗ u + D u (no activation)."""
        k = self.kernel(u.shape[-1])
        y = fft_conv(u, k[0])
        if self.bidirectional:
            ahead = fft_conv(u.flip(-1), k[1]).flip(-1)               # Σ_m k_m u_{l+m}
            y = y + F.pad(ahead[..., 1:], (0, 1))                      # shifted by one: u_{l+1+m}
        return y + self.D[:, None] * u

    def forward(self, u: Tensor) -> Tensor:
        return self.output_linear(self.dropout(F.gelu(self.ssm(u))))


class S4Layer(nn.Module):
    """SSSD's ``S4Layer``: S4 block, residual connection, LayerNorm over channels; (B, H, L) → (B, H, L)."""

    def __init__(self, channels: int, N: int = 64, dropout: float = 0.0, bidirectional: bool = True):
        super().__init__()
        self.s4 = S4(channels, N, bidirectional, dropout)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.s4(x) + x
        return self.norm(y.transpose(1, 2)).transpose(1, 2)


def step_embedding(s: Tensor, dim: int = 128) -> Tensor:
    """DiffWave/SSSD sinusoid of integer steps: [sin(s·e^{−j ln 10⁴/(d/2−1)}), cos(…)], (B,) → (B, dim)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=s.device) / (half - 1))
    arg = s.float()[:, None] * freq
    return torch.cat([torch.sin(arg), torch.cos(arg)], 1)


class SSSDResidualBlock(nn.Module):
    """One SSSD^S4 residual layer (Fig. 2)."""

    def __init__(self, channels: int, skip_channels: int, cond_channels: int, N: int, dropout: float,
                 bidirectional: bool):
        super().__init__()
        self.fc_t = nn.Linear(512, channels)
        self.conv = weight_norm(nn.Conv1d(channels, 2 * channels, 3, padding=1))
        self.s4_1 = S4Layer(2 * channels, N, dropout, bidirectional)
        self.cond_conv = weight_norm(Conv1x1(cond_channels, 2 * channels))
        self.s4_2 = S4Layer(2 * channels, N, dropout, bidirectional)
        self.res_conv = weight_norm(Conv1x1(channels, channels))
        self.skip_conv = weight_norm(Conv1x1(channels, skip_channels))

    def forward(self, h: Tensor, cond: Tensor, emb: Tensor) -> tuple[Tensor, Tensor]:
        y = h + self.fc_t(emb)[:, :, None]
        y = self.s4_1(self.conv(y))
        y = self.s4_2(y + self.cond_conv(cond))
        a, b = y.chunk(2, dim=1)
        y = torch.tanh(a) * torch.sigmoid(b)
        return (h + self.res_conv(y)) * math.sqrt(0.5), self.skip_conv(y)


class SSSDBackbone(nn.Module):
    """ε_θ of SSSD^S4, called ``backbone(x, t, cond)`` with x (B, K, L), t (B,) on the grid (s+1)/T,
    ``cond["observed"]``/``cond["known"]`` (B, K, L).

    Args: num_features K; channels C [256]; skip_channels [256]; layers R [36]; state_size N [64];
    num_steps T [200]; dropout [0]; bidirectional [True].
    """

    def __init__(self, num_features: int, channels: int = 256, skip_channels: int = 256, layers: int = 36,
                 state_size: int = 64, num_steps: int = 200, dropout: float = 0.0, bidirectional: bool = True):
        super().__init__()
        self.num_features, self.num_steps = num_features, num_steps
        self.init_conv = weight_norm(Conv1x1(num_features, channels))
        self.fc_t1, self.fc_t2 = nn.Linear(128, 512), nn.Linear(512, 512)
        self.blocks = nn.ModuleList(
            SSSDResidualBlock(channels, skip_channels, 2 * num_features, state_size, dropout, bidirectional)
            for _ in range(layers)
        )
        self.final_conv = weight_norm(Conv1x1(skip_channels, skip_channels))
        self.out_conv = Conv1x1(skip_channels, num_features)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[1] != self.num_features:
            raise ShapeError(f"this SSSD model was built/trained for {self.num_features} features, but x has shape "
                             f"{tuple(x.shape)} (expected (batch, {self.num_features}, steps))")
        cond = cond or {}
        known = cond.get("known")
        known = torch.zeros_like(x, dtype=torch.bool) if known is None else known.expand_as(x).bool()
        observed = cond.get("observed")
        observed = torch.zeros_like(x) if observed is None else torch.where(known, observed, torch.zeros_like(x))
        x = torch.where(known, observed, x)  # only_generate_missing: known entries enter clean
        c = torch.cat([observed, known.to(x.dtype)], 1)
        s = torch.clamp(torch.round(t.double() * self.num_steps).long() - 1, 0, self.num_steps - 1)
        emb = F.silu(self.fc_t2(F.silu(self.fc_t1(step_embedding(s.to(x.device))))))
        h = F.relu(self.init_conv(x))
        skip = 0
        for block in self.blocks:
            h, sk = block(h, c, emb)
            skip = skip + sk
        out = F.relu(self.final_conv(skip * math.sqrt(1.0 / len(self.blocks))))
        return self.out_conv(out)
