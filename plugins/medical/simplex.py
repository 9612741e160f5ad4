"""Multi-octave simplex noise as a polydiff noise field (Wyatt et al. 2022, AnoDDPM, §3.2).

AnoDDPM replaces the Gaussian ε of DDPM — both in training and in partial diffusion — by
spatially correlated simplex noise, so that the corruption removes structures of lesion size
instead of only pixel-level detail. A draw is the fractal sum (Wyatt et al. 2022, §3.2)

    n(p) = Σ_{o=0}^{N−1} γ^o · S(2^o ν p + δ_o)

of simplex gradient noise S (Perlin 2001; the skewed-lattice algorithm as written up by
Gustavson 2005, "Simplex noise demystified") with N octaves, persistence (amplitude decay) γ,
starting frequency ν in cycles per pixel, and random offsets δ_o. Paper defaults: N = 6,
γ = 0.8, ν = 2⁻⁶ (their code passes "frequency = 64", the period in pixels of the first octave).

Differences to the paper's code, and why:

* AnoDDPM samples 3D noise and slices it at a time-dependent z to get 2D fields; here every
  sample, channel and octave gets its own random permutation table and lattice offset drawn
  from the caller's ``torch.Generator`` (the same thing: an independent random slice of the
  field), so 2D images use 2D simplex noise and volumes (batch, C, D, H, W) use 3D simplex noise.
* Each (sample, channel) field is standardised to zero mean and unit variance. DDPM's forward
  process and ε-loss assume unit-variance noise; raw simplex sums are not (their variance depends
  on ν, N and γ, and the coarse octaves give each small image a random offset).

Everything is vectorised torch (gathers into per-field permutation tables); a 16×1×64×64 batch
with 6 octaves takes about 65 ms of CPU time on one thread (float64 lattice arithmetic).
"""

from __future__ import annotations

import math

import torch

from polydiff import ConfigError, NoiseField, ShapeError

Tensor = torch.Tensor

# Gradient directions: the 12 edge midpoints of a cube (Gustavson 2005, "grad3"); 2D uses (x, y).
_GRAD3 = torch.tensor(
    [[1, 1, 0], [-1, 1, 0], [1, -1, 0], [-1, -1, 0],
     [1, 0, 1], [-1, 0, 1], [1, 0, -1], [-1, 0, -1],
     [0, 1, 1], [0, -1, 1], [0, 1, -1], [0, -1, -1]],
    dtype=torch.float64,
)
_TABLE = 256  # lattice period of the hash (permutation table size)


def _hash(perm: Tensor, *coords: Tensor) -> Tensor:
    """Nested permutation hash perm[i + perm[j + perm[k]]] of integer lattice coordinates.

    ``perm`` is (fields, 2·256) (a permutation of 0…255 written twice), coordinates are
    (fields, points) int64 already wrapped to [0, 256), so every index stays below 512.
    """
    h = torch.gather(perm, 1, coords[-1])
    for c in reversed(coords[:-1]):
        h = torch.gather(perm, 1, c + h)
    return h


def simplex2d(x: Tensor, y: Tensor, perm: Tensor) -> Tensor:
    """2D simplex noise at points (x, y) of shape (fields, points), values in about [−1, 1].

    Skew to the square lattice with F = (√3 − 1)/2, find the containing triangle, sum the three
    corner contributions (0.5 − r²)⁴ ⟨g, r⟩ and scale by 70 (Gustavson 2005, §"2D simplex noise").
    """
    f2 = 0.5 * (math.sqrt(3.0) - 1.0)
    g2 = (3.0 - math.sqrt(3.0)) / 6.0
    s = (x + y) * f2
    i = torch.floor(x + s)
    j = torch.floor(y + s)
    t = (i + j) * g2
    x0 = x - (i - t)
    y0 = y - (j - t)
    upper = (x0 > y0).to(x.dtype)  # lower triangle (1, 0) if x0 > y0 else upper (0, 1)
    i1, j1 = upper, 1.0 - upper
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    corners = [(zero, zero, x0, y0),
               (i1, j1, x0 - i1 + g2, y0 - j1 + g2),
               (one, one, x0 - 1.0 + 2.0 * g2, y0 - 1.0 + 2.0 * g2)]
    ii = i.long() & (_TABLE - 1)
    jj = j.long() & (_TABLE - 1)
    grad = _GRAD3[:, :2].to(x.dtype).to(x.device)
    total = torch.zeros_like(x)
    for di, dj, dx, dy in corners:
        gi = _hash(perm, (ii + di.long()) & (_TABLE - 1), (jj + dj.long()) & (_TABLE - 1)) % 12
        g = grad[gi]
        r2 = dx * dx + dy * dy
        w = torch.clamp(0.5 - r2, min=0.0) ** 4
        total = total + w * (g[..., 0] * dx + g[..., 1] * dy)
    return 70.0 * total


def simplex3d(x: Tensor, y: Tensor, z: Tensor, perm: Tensor) -> Tensor:
    """3D simplex noise at points (x, y, z) of shape (fields, points), values in about [−1, 1].

    Skew with F = 1/3, pick one of six tetrahedra by ranking the offsets, sum the four corner
    contributions (0.6 − r²)⁴ ⟨g, r⟩ and scale by 32 (Gustavson 2005, §"3D simplex noise").
    """
    f3, g3 = 1.0 / 3.0, 1.0 / 6.0
    s = (x + y + z) * f3
    i, j, k = torch.floor(x + s), torch.floor(y + s), torch.floor(z + s)
    t = (i + j + k) * g3
    x0, y0, z0 = x - (i - t), y - (j - t), z - (k - t)
    # Corner 1 steps along the largest offset, corner 2 along the two largest.
    xy, yz, xz = (x0 >= y0), (y0 >= z0), (x0 >= z0)
    i1 = (xy & xz).to(x.dtype)
    j1 = (~xy & yz).to(x.dtype)
    k1 = (~xz & ~yz).to(x.dtype)
    i2 = (xy | xz).to(x.dtype)
    j2 = (~xy | yz).to(x.dtype)
    k2 = (~(xz & yz)).to(x.dtype)
    corners = [
        (torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x), x0, y0, z0),
        (i1, j1, k1, x0 - i1 + g3, y0 - j1 + g3, z0 - k1 + g3),
        (i2, j2, k2, x0 - i2 + 2 * g3, y0 - j2 + 2 * g3, z0 - k2 + 2 * g3),
        (torch.ones_like(x), torch.ones_like(x), torch.ones_like(x),
         x0 - 1 + 3 * g3, y0 - 1 + 3 * g3, z0 - 1 + 3 * g3),
    ]
    ii = i.long() & (_TABLE - 1)
    jj = j.long() & (_TABLE - 1)
    kk = k.long() & (_TABLE - 1)
    grad = _GRAD3.to(x.dtype).to(x.device)
    total = torch.zeros_like(x)
    for di, dj, dk, dx, dy, dz in corners:
        gi = _hash(perm, (ii + di.long()) & (_TABLE - 1), (jj + dj.long()) & (_TABLE - 1),
                   (kk + dk.long()) & (_TABLE - 1)) % 12
        g = grad[gi]
        r2 = dx * dx + dy * dy + dz * dz
        w = torch.clamp(0.6 - r2, min=0.0) ** 4
        total = total + w * (g[..., 0] * dx + g[..., 1] * dy + g[..., 2] * dz)
    return 32.0 * total


class SimplexNoise(NoiseField):
    """Standardised multi-octave simplex noise for tensors (batch, C, H, W) or (batch, C, D, H, W).

    Args:
        octaves: number of octaves N (AnoDDPM: 6).
        persistence: amplitude factor γ between octaves (AnoDDPM: 0.8).
        frequency: starting frequency ν in cycles per pixel (AnoDDPM: 2⁻⁶ = 1/64); each octave
            doubles it (lacunarity 2).
        normalize: standardise every (sample, channel) field to zero mean and unit variance (see the
            module docstring for why this is the default).

    ``sample`` draws, from ``generator``, an independent permutation table and lattice offset per
    sample, channel and octave, so equal seeds give equal noise and samples in a batch differ.
    """

    def __init__(self, octaves: int = 6, persistence: float = 0.8, frequency: float = 2.0**-6,
                 normalize: bool = True):
        if int(octaves) < 1:
            raise ConfigError(f"SimplexNoise: octaves must be >= 1, got {octaves}")
        if not persistence > 0:
            raise ConfigError(f"SimplexNoise: persistence must be > 0, got {persistence}")
        if not 0 < frequency <= 1:
            raise ConfigError(f"SimplexNoise: frequency must be in (0, 1] cycles per pixel, got {frequency}")
        self.octaves = int(octaves)
        self.persistence = float(persistence)
        self.frequency = float(frequency)
        self.normalize = bool(normalize)

    def sample(self, shape, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (4, 5):
            raise ShapeError(
                f"SimplexNoise.sample: shape must be (batch, C, H, W) or (batch, C, D, H, W), got {shape}")
        dtype = dtype or torch.get_default_dtype()
        spatial = shape[2:]
        fields = shape[0] * shape[1]
        gen_device = generator.device if generator is not None else torch.device("cpu")
        # Pixel coordinates of every grid point, flattened: (ndim, points).
        axes = [torch.arange(n, dtype=torch.float64) for n in spatial]
        grid = torch.stack([g.reshape(-1) for g in torch.meshgrid(*axes, indexing="ij")])
        out = torch.zeros(fields, grid.shape[1], dtype=torch.float64)
        amp, freq = 1.0, self.frequency
        for _ in range(self.octaves):
            keys = torch.rand(fields, _TABLE, generator=generator, device=gen_device).cpu()
            perm = torch.argsort(keys, dim=1)
            perm = torch.cat([perm, perm], dim=1)
            offset = _TABLE * torch.rand(fields, len(spatial), 1, generator=generator, device=gen_device,
                                         dtype=torch.float64).cpu()
            pts = grid.unsqueeze(0) * freq + offset  # (fields, ndim, points)
            if len(spatial) == 2:
                val = simplex2d(pts[:, 0], pts[:, 1], perm)
            else:
                val = simplex3d(pts[:, 0], pts[:, 1], pts[:, 2], perm)
            out += amp * val
            amp *= self.persistence
            freq *= 2.0
        if self.normalize:
            out = out - out.mean(dim=1, keepdim=True)
            out = out / out.std(dim=1, keepdim=True).clamp_min(1e-12)
        return out.reshape(shape).to(device=device, dtype=dtype)

    def __repr__(self):
        return (f"SimplexNoise(octaves={self.octaves}, persistence={self.persistence}, "
                f"frequency={self.frequency}, normalize={self.normalize})")
