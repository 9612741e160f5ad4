"""polydiff.discrete / discrete_samplers: D3PM transitions against brute-force matrix products and Bayes'
rule, samplers and bounds of an exact oracle on an enumerable 2-token distribution, MDLM caching, masks."""

import functools
import math

import pytest
import torch
from torch import nn

from polydiff.discrete import D3PMLoss, DiscreteProcess, MDLMLoss, d3pm_vlb, x0_probs
from polydiff.discrete_samplers import sample_discrete
from polydiff.errors import ConfigError, ShapeError

F64 = torch.float64
K, L = 3, 2
# a strongly correlated distribution over the 9 sequences of 2 tokens from 3 classes
TABLE = torch.tensor([0.30, 0.02, 0.08, 0.05, 0.25, 0.05, 0.01, 0.04, 0.20], dtype=F64)
SEQS = torch.cartesian_prod(torch.arange(K), torch.arange(K))
ENTROPY = -(TABLE * TABLE.log()).sum().item()
CASES = [(tr, sc) for tr in ("uniform", "absorbing") for sc in ("mutual_info", "cosine", "linear")]


class Oracle:
    """Exact p(x_0^ℓ | x_t) per token for TABLE under the process, by enumerating the 9 sequences."""

    def __init__(self, process):
        self.process, self.calls, self.rows = process, 0, 0

    def __call__(self, x_t, t, cond):
        self.calls += 1
        self.rows += x_t.shape[0]
        zero = torch.zeros(())
        if bool((t == t[0]).all()):  # one time for the batch: scalar coefficients
            lik = self.process.likelihood(x_t, t[0], zero)
        else:
            lik = self.process.likelihood(x_t, t, torch.zeros_like(t))
        if "known" in cond:  # prompt tokens are exact observations at every t
            onehot = nn.functional.one_hot(x_t, self.process.num_states).to(F64)
            lik = torch.where(cond["known"].unsqueeze(-1), onehot, lik)
        per_seq = lik[:, torch.arange(L)[None, :], SEQS]  # (B, 9, L): q(x_t^ℓ | seq^ℓ)
        post = torch.softmax(TABLE.log() + torch.log(per_seq).sum(-1), dim=-1)
        marg = torch.einsum("bs,slk->blk", post, nn.functional.one_hot(SEQS, K).to(F64))
        return torch.log(marg.clamp_min(1e-300))


def tt(v):
    return torch.tensor(v, dtype=F64)


def tv_to_table(x):
    counts = torch.bincount(x[:, 0] * K + x[:, 1], minlength=K * K).to(F64)
    return 0.5 * (counts / len(x) - TABLE).abs().sum().item()


def noise_floor(n, reps=40, seed=123):
    """Largest TV between TABLE and the empirical law of n exact draws, over ``reps`` repetitions."""
    g = torch.Generator().manual_seed(seed)
    return max(tv_to_table(SEQS[torch.multinomial(TABLE, n, True, generator=g)]) for _ in range(reps))


def data(n, seed):
    return SEQS[torch.multinomial(TABLE, n, True, generator=torch.Generator().manual_seed(seed))]


# ---------------------------------------------------------------------------------------------
# forward process


@pytest.mark.parametrize("transition,schedule", CASES)
def test_marginals_equal_products_of_one_step_matrices(transition, schedule):
    T = 12
    proc = DiscreteProcess(K, transition, schedule, num_steps=T)
    qbar = torch.eye(proc.num_states, dtype=F64)
    x0 = torch.arange(K)
    for i in range(1, T + 1):
        q_i = proc.step_matrix(i)
        torch.testing.assert_close(q_i.sum(1), torch.ones(proc.num_states, dtype=F64))
        assert (q_i >= 0).all()
        qbar = qbar @ q_i
        torch.testing.assert_close(proc.q_probs(x0, tt(i / T)), qbar[:K], rtol=1e-12, atol=1e-14)
    assert proc.betas().shape == (T,)
    if transition == "absorbing":
        torch.testing.assert_close(qbar[:, proc.mask_id], torch.ones(K + 1, dtype=F64), rtol=0, atol=1e-9)


def test_schedules_match_their_definitions():
    T = 10
    jsd = DiscreteProcess(K, "absorbing", "mutual_info", num_steps=T)
    # Sohl-Dickstein / D3PM "jsd": β_t = 1/(T − t + 1)
    torch.testing.assert_close(jsd.betas(), 1 / torch.arange(T, 0, -1, dtype=F64), rtol=1e-12, atol=0)
    cos = DiscreteProcess(K, "uniform", "cosine", num_steps=T)
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2)  # noqa: E731
    assert cos.betas()[3].item() == pytest.approx(1 - f(0.4) / f(0.3), rel=1e-12)
    lin = DiscreteProcess(K, "uniform", "linear", num_steps=1000)
    torch.testing.assert_close(lin.betas()[[0, -1]], torch.tensor([1e-4, 0.02], dtype=F64), rtol=1e-9, atol=0)
    # uniform mutual-information schedule: I(x_t; x_0) = (1 − t) log K for a uniform x_0
    mi = DiscreteProcess(K, "uniform", "mutual_info", num_steps=T)
    for t in (0.2, 0.5, 0.9):
        q = mi.q_probs(torch.arange(K), tt(t))  # rows: q(x_t | x_0 = k)
        p_t = q.mean(0)
        info = -(p_t * p_t.log()).sum() + (q * q.log()).sum(1).mean()
        assert info.item() == pytest.approx((1 - t) * math.log(K), abs=1e-9)


@pytest.mark.parametrize("transition", ["uniform", "absorbing"])
def test_posterior_matches_bayes_rule_by_brute_force(transition):
    T = 8
    proc = DiscreteProcess(4, transition, "cosine", num_steps=T)
    mats = [proc.step_matrix(i) for i in range(1, T + 1)]
    prod = lambda a, b: functools.reduce(torch.matmul, mats[a:b], torch.eye(proc.num_states, dtype=F64))  # noqa: E731
    g = torch.Generator().manual_seed(0)
    for i, j in [(1, 2), (3, 4), (7, 8), (2, 6), (0, 5)]:  # s = i/T < t = j/T, also skipping steps
        x0 = torch.randint(0, 4, (64,), generator=g)
        x_t = proc.q_sample(x0, tt(j / T), g)
        q_s = prod(0, i)[x0]  # q(x_s | x_0)
        lik = prod(i, j)[:, x_t].T  # q(x_t | x_s = ·)
        want = q_s * lik / (q_s * lik).sum(1, keepdim=True)
        onehot = nn.functional.one_hot(x0, proc.num_states).to(F64)
        got = proc.posterior(x_t, onehot, tt(j / T), tt(i / T))
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for form in ("bayes", "d3pm"):  # for one-hot p̃ both reverse kernels are the exact posterior
            if i > 0:
                torch.testing.assert_close(proc.reverse(x_t, onehot, tt(j / T), tt(i / T), form),
                                           want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("transition", ["uniform", "absorbing"])
def test_bayes_reverse_of_the_exact_posterior_is_the_true_reverse_kernel(transition):
    """Single token: q(x_s | x_t) from the joint by brute force vs reverse(x_t, q(x_0|x_t))."""
    T, k = 6, 4
    proc = DiscreteProcess(k, transition, "cosine", num_steps=T)
    p_data = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=F64)
    n = proc.num_states
    p_data_full = torch.cat([p_data, torch.zeros(n - k, dtype=F64)])
    t, s = 4 / T, 2 / T
    q_s0, q_ts = proc.transition_matrix(s, 0.0), proc.transition_matrix(t, s)
    joint = p_data_full[:, None, None] * q_s0[:, :, None] * q_ts[None, :, :]  # (x0, x_s, x_t)
    x_t = torch.arange(n)
    p_xt = joint.sum((0, 1))
    valid = p_xt > 0
    true_rev = (joint.sum(0) / p_xt).T[valid]  # q(x_s | x_t)
    post0 = (joint.sum(1) / p_xt).T[valid]  # q(x_0 | x_t)
    got = proc.reverse(x_t[valid], post0, tt(t), tt(s), "bayes")
    torch.testing.assert_close(got, true_rev, rtol=1e-10, atol=1e-12)
    eq4 = proc.reverse(x_t[valid], post0, tt(t), tt(s), "d3pm")
    if transition == "absorbing":  # q(x_t|x̃0) is the same for all compatible x̃0: Eq. 4 is exact too
        torch.testing.assert_close(eq4, true_rev, rtol=1e-10, atol=1e-12)
    else:  # Eq. 4 reweights by q(x_t|x̃0)
        assert (eq4 - true_rev).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------
# samplers with the exact oracle


@pytest.mark.parametrize(
    "transition,schedule,sampler,steps",
    [("absorbing", "mutual_info", "ancestral", 100), ("uniform", "cosine", "ancestral", 100),
     ("absorbing", "mutual_info", "mdlm", 300)],
)
def test_sampler_reproduces_the_target_distribution(transition, schedule, sampler, steps):
    n = 6000
    proc = DiscreteProcess(K, transition, schedule, num_steps=steps)
    x, info = sample_discrete(Oracle(proc), proc, (n, L), sampler=sampler,
                              generator=torch.Generator().manual_seed(1), return_info=True)
    assert x.dtype == torch.long and x.min() >= 0 and x.max() < K
    assert tv_to_table(x) < noise_floor(n)
    if sampler == "mdlm":  # a sequence of 2 tokens changes at most twice: ≤ 3 evaluations per sample
        assert info["nfe_per_sample"] <= 3.0 and info["nfe"] == steps


def test_mdlm_caching_gives_identical_samples_with_fewer_evaluations():
    proc = DiscreteProcess(K, "absorbing", "mutual_info", num_steps=None)
    runs = {}
    for cache in (False, True):
        oracle = Oracle(proc)
        x, info = sample_discrete(oracle, proc, (500, L), steps=200, sampler="mdlm", cache=cache,
                                  generator=torch.Generator().manual_seed(7), return_info=True)
        runs[cache] = (x, info, oracle.rows)
    assert torch.equal(runs[True][0], runs[False][0])
    assert runs[False][1]["evaluations"] == 200 * 500 == runs[False][2]
    assert runs[True][1]["evaluations"] == runs[True][2] <= 3 * 500
    assert runs[True][1]["nfe"] < 200 or runs[True][1]["nfe_per_sample"] < 3.01


def test_sampler_keeps_known_tokens_and_padding():
    proc = DiscreteProcess(K, "absorbing", "mutual_info", num_steps=50)
    n = 3000
    known = torch.zeros(n, L, dtype=torch.bool)
    known[:, 0] = True
    x_known = torch.zeros(n, L, dtype=torch.long)
    x_known[:, 0] = 1  # condition on the first token = 1: p(x_2 | x_1 = 1) = (0.05, 0.25, 0.05)/0.35
    x = sample_discrete(Oracle(proc), proc, (n, L), known=known, x_known=x_known,
                        generator=torch.Generator().manual_seed(2))
    assert (x[:, 0] == 1).all()
    freq = torch.bincount(x[:, 1], minlength=K).to(F64) / n
    want = torch.tensor([0.05, 0.25, 0.05], dtype=F64) / 0.35
    assert (freq - want).abs().max() < 4 * math.sqrt(0.25 / n)
    presence = torch.ones(n, L, dtype=torch.bool)
    presence[::2, 1] = False
    x = sample_discrete(Oracle(proc), proc, (n, L), presence=presence, generator=torch.Generator().manual_seed(3))
    assert (x[::2, 1] == 0).all() and (x != proc.mask_id).all()


def test_same_generator_gives_identical_samples():
    proc = DiscreteProcess(K, "uniform", "cosine", num_steps=20)
    a = sample_discrete(Oracle(proc), proc, (64, L), generator=torch.Generator().manual_seed(4))
    b = sample_discrete(Oracle(proc), proc, (64, L), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# bounds and losses with the exact oracle


@pytest.mark.parametrize("transition,schedule", [("absorbing", "mutual_info"), ("uniform", "cosine")])
def test_vlb_of_the_oracle_bounds_the_true_nll_closely(transition, schedule):
    proc = DiscreteProcess(K, transition, schedule, num_steps=100)
    x0 = data(3000, 5)
    res = d3pm_vlb(Oracle(proc), proc, {"x": x0}, generator=torch.Generator().manual_seed(6))
    true_nll = -TABLE.log()[x0[:, 0] * K + x0[:, 1]]
    gap = res["nll"] - true_nll  # per-sample: removes the data variance
    se = gap.std().item() / math.sqrt(len(gap))
    assert gap.mean().item() > -3 * se  # a bound (entropy ≤ E[VLB]) …
    assert gap.mean().item() < 0.03 + 3 * se  # … that is tight for an exact model with T = 100
    assert res["terms"].shape == (3000, 101)
    torch.testing.assert_close(res["bits_per_token"], res["nll"] / (L * math.log(2)))
    assert res["nll"].mean().item() == pytest.approx(ENTROPY, abs=0.03 + 3 * gap.std().item() / 50 + 0.05)


def test_mdlm_loss_of_the_oracle_equals_the_entropy():
    """Continuous-time NELBO with the exact denoiser: E[L]·L_tokens = H(data) (tight bound)."""
    proc = DiscreteProcess(K, "absorbing", "mutual_info", num_steps=None)
    x0 = data(4000, 8)
    loss_fn = MDLMLoss(proc, antithetic=True)
    values = torch.tensor([loss_fn(Oracle(proc), {"x": x0}, generator=torch.Generator().manual_seed(s)).item() * L
                           for s in range(8)])
    se = values.std().item() / math.sqrt(len(values))
    assert values.mean().item() == pytest.approx(ENTROPY, abs=4 * se + 0.01)


def test_d3pm_hybrid_loss_components_and_reverse_forms():
    proc = DiscreteProcess(K, "absorbing", "mutual_info", num_steps=50)
    x0 = data(2000, 9)
    loss, parts = D3PMLoss(proc)(Oracle(proc), {"x": x0}, generator=torch.Generator().manual_seed(0),
                                 return_components=True)
    torch.testing.assert_close(loss, parts["vb"] + 0.01 * parts["ce"])
    # the oracle's CE is E[H(x_0|x_t)] in bits, below the data entropy per token
    assert 0 < parts["ce"].item() < ENTROPY / L / math.log(2)
    same = D3PMLoss(proc, reverse="d3pm")(Oracle(proc), {"x": x0}, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, loss)  # Eq. 4 and the Bayes form agree for absorbing


class ParamLogits(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.param = nn.Parameter(torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(0)))
        self.seen = None

    def forward(self, x_t, t, cond):
        self.seen = (x_t.clone(), dict(cond))
        return self.param + 0 * x_t.unsqueeze(-1)


@pytest.mark.parametrize("loss_kind", ["d3pm-uniform", "d3pm-absorbing", "mdlm"])
def test_gradient_is_exactly_zero_on_padding_and_prompt_tokens(loss_kind):
    n, length = 16, 6
    x0 = torch.randint(0, K, (n, length), generator=torch.Generator().manual_seed(1))
    presence = torch.ones(n, length, dtype=torch.bool)
    presence[:, 4:] = False
    known = torch.zeros(n, length, dtype=torch.bool)
    known[:, 0] = True
    x0[~presence] = -100  # padding ids are anything
    if loss_kind == "mdlm":
        proc = DiscreteProcess(K, "absorbing", "mutual_info", num_steps=None)
        loss_fn = MDLMLoss(proc)
    else:
        proc = DiscreteProcess(K, loss_kind.split("-")[1], "cosine", num_steps=20)
        loss_fn = D3PMLoss(proc)
    model = ParamLogits((n, length, K))
    loss = loss_fn(model, {"x": x0, "presence": presence, "known": known}, generator=torch.Generator().manual_seed(2))
    loss.backward()
    grad = model.param.grad
    target = presence & ~known
    assert torch.isfinite(loss)
    assert (grad[~target] == 0).all()
    assert (grad[target].abs().sum(-1) > 0).float().mean() > 0.3  # many (masked/noised) targets get gradient
    x_t, cond = model.seen
    assert torch.equal(x_t[:, 0], x0[:, 0]) and (x_t[:, 4:] == 0).all()  # prompt kept clean, padding → 0
    assert torch.equal(cond["presence"], presence) and torch.equal(cond["known"], known)


def test_training_a_tiny_model_with_the_hybrid_loss_reduces_the_bound():
    torch.manual_seed(0)
    proc = DiscreteProcess(K, "absorbing", "mutual_info", num_steps=20)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(K + 1, 16)
            self.out = nn.Sequential(nn.Linear(2 * 16 + 1, 64), nn.SiLU(), nn.Linear(64, L * K))

        def forward(self, x_t, t, cond):
            h = torch.cat([self.emb(x_t).flatten(1), t[:, None].float()], 1)
            return self.out(h).reshape(-1, L, K)

    model = Tiny()
    loss_fn = D3PMLoss(proc)
    evalx = data(1000, 11)
    before = d3pm_vlb(model, proc, {"x": evalx}, generator=torch.Generator().manual_seed(0))["nll"].mean()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for step in range(150):
        opt.zero_grad()
        loss_fn(model, {"x": data(256, 100 + step)}, generator=g).backward()
        opt.step()
    after = d3pm_vlb(model, proc, {"x": evalx}, generator=torch.Generator().manual_seed(0))["nll"].mean()
    assert after < before - 0.5 * (before - ENTROPY)
    assert after > ENTROPY - 0.1


def test_bad_input_gives_clear_errors():
    proc = DiscreteProcess(K, "absorbing", num_steps=10)
    oracle = Oracle(proc)
    with pytest.raises(ConfigError, match="transition"):
        DiscreteProcess(K, "gaussian")
    with pytest.raises(ConfigError, match="schedule"):
        DiscreteProcess(K, "uniform", "sqrt")
    with pytest.raises(ConfigError, match="num_classes"):
        DiscreteProcess(1)
    with pytest.raises(ConfigError, match="linear"):
        DiscreteProcess(K, "uniform", "linear", num_steps=None)
    with pytest.raises(ShapeError, match="integer tensor"):
        D3PMLoss(proc)(oracle, {"x": torch.zeros(4, L)})
    with pytest.raises(ShapeError, match=r"expected \[0, 2\]"):
        D3PMLoss(proc)(oracle, {"x": torch.full((4, L), 3)})
    with pytest.raises(ShapeError, match="logits of shape"):
        x0_probs(lambda x, t, c: torch.zeros(4, L, K + 1), proc, torch.zeros(4, L, dtype=torch.long),
                 torch.ones(4, dtype=F64))
    with pytest.raises(ConfigError, match="absorbing"):
        sample_discrete(oracle, DiscreteProcess(K, "uniform", num_steps=10), (2, L), sampler="mdlm")
    with pytest.raises(ConfigError, match="cache"):
        sample_discrete(oracle, proc, (2, L), sampler="ancestral", cache=True)
    with pytest.raises(ConfigError, match="steps"):
        sample_discrete(oracle, DiscreteProcess(K, num_steps=None), (2, L))
    with pytest.raises(ShapeError, match="x_known"):
        sample_discrete(oracle, proc, (2, L), known=torch.ones(2, L, dtype=torch.bool))
    with pytest.raises(ConfigError, match="absorbing"):
        MDLMLoss(DiscreteProcess(K, "uniform"))
    with pytest.raises(ConfigError, match="reverse"):
        D3PMLoss(proc, reverse="exact")
