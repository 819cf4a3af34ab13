"""The guided sub-step kernel and its path-space accounting, checked on the exact twin."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ardm_infer.ardm import (
    DeterministicSamplerError,
    Schedule,
    analytic_ardm,
    sampler_transition_moments,
)
from ardm_infer.ardm.pyro_model import path_log_density
from ardm_infer.dynamics import LinearGaussianTwin
from ardm_infer.guidance import FunctionGuidance, ZeroGuidance
from ardm_infer.observe import subsample_mask

DIM = 4


@pytest.fixture(scope="module")
def twin():
    return LinearGaussianTwin.default(dim=DIM)


def context(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, 1, DIM, generator=g, dtype=torch.float64)
    return x.expand(batch, 1, 1, DIM).clone()


def pull_to(target: float, scale: float = 0.5):
    """A state-dependent control pulling x0_hat toward ``target`` (in units of tau)."""
    return FunctionGuidance(lambda st: scale * st.tau * (target - st.x0_hat))


def test_zero_guidance_is_bit_identical_to_the_unguided_sampler(twin):
    ardm = analytic_ardm(twin, Schedule(substeps=8, sigma_max=20.0))
    ctx = context(64)
    plain = ardm.step_frame(ctx, torch.Generator().manual_seed(3))
    zero = ardm.step_frame(ctx, torch.Generator().manual_seed(3), guidance=ZeroGuidance())
    none = ardm.step_frame(
        ctx, torch.Generator().manual_seed(3), guidance=FunctionGuidance(lambda s: None)
    )
    assert torch.equal(plain.frame, zero.frame) and torch.equal(plain.frame, none.frame)
    assert torch.equal(zero.kl, torch.zeros(64, dtype=torch.float64))
    assert torch.equal(zero.log_ratio, torch.zeros(64, dtype=torch.float64))


def test_reported_kl_is_the_monte_carlo_mean_of_the_log_ratio(twin):
    ardm = analytic_ardm(twin, Schedule(substeps=8, sigma_max=20.0))
    n = 20000
    res = ardm.step_frame(context(n), torch.Generator().manual_seed(4), guidance=pull_to(2.0))
    diff = res.log_ratio - res.kl  # = sum_s u.xi/tau, mean zero under q_u
    se = diff.std() / math.sqrt(n)
    assert res.kl.mean() > 1.0  # the control is not negligible
    assert diff.mean().abs() < 4 * se, (diff.mean(), se)


def test_importance_weights_of_a_guided_proposal_average_to_one(twin):
    ardm = analytic_ardm(twin, Schedule(substeps=8, sigma_max=20.0))
    n = 40000
    res = ardm.step_frame(context(n), torch.Generator().manual_seed(5), guidance=pull_to(1.0, 0.2))
    w = torch.exp(-res.log_ratio)  # dp/dq_u on the path
    se = w.std() / math.sqrt(n)
    assert (w.mean() - 1).abs() < 4 * se, (w.mean(), se)


def test_pyro_path_log_density_agrees_with_the_kernel_accounting(twin):
    sched = Schedule(substeps=6, sigma_max=20.0)
    ardm = analytic_ardm(twin, sched)
    g = torch.Generator().manual_seed(6)
    ctx = context(16)
    frames = []
    for t in range(3):
        fr = ardm.step_frame(ctx, g, guidance=pull_to(-1.0), frame=t, record=True)
        frames.append(fr)
        ctx = fr.frame.unsqueeze(1)
    ours = sum(fr.log_ratio for fr in frames)
    log_q = path_log_density(sched, frames, controlled=True)
    log_p = path_log_density(sched, frames, controlled=False)
    torch.testing.assert_close(log_q - log_p, ours, atol=1e-8, rtol=1e-8)
    # Observation sites use the library's one likelihood.
    mask = subsample_mask((1, DIM), 2)
    obs = [(fr.frame + 0.1, mask, 0.5) for fr in frames]
    with_y = path_log_density(sched, frames, controlled=True, observations=obs)
    expected_y = sum(
        (-(0.1**2) / (2 * 0.25) - math.log(0.5 * math.sqrt(2 * math.pi))) * int(mask.sum())
        for _ in frames
    )
    torch.testing.assert_close(with_y - log_q, torch.full_like(log_q, expected_y))


def test_sampler_transition_matches_its_exact_moments_by_monte_carlo(twin):
    sched = Schedule(substeps=8, sigma_max=50.0, sigma_min=0.01, sigma_out=0.001)
    ardm = analytic_ardm(twin, sched)
    n = 40000
    ctx = context(n, seed=7)
    out = ardm.step(ctx, torch.Generator().manual_seed(7))[:, 0]
    mean, cov = sampler_transition_moments(twin, sched, ctx[0, 0, 0])
    sd = torch.sqrt(torch.diagonal(cov))
    assert ((out.mean(0) - mean).abs() < 4.5 * sd / math.sqrt(n)).all()
    # Var of a sample covariance entry: (C_ii C_jj + C_ij^2) / n.
    cov_se = torch.sqrt((torch.outer(torch.diagonal(cov), torch.diagonal(cov)) + cov**2) / n)
    assert ((torch.cov(out.T) - cov).abs() < 4.5 * cov_se).all()


def test_sampler_transition_approaches_the_exact_gaussian_as_substeps_grow(twin):
    x = context(1, seed=8)[0, 0, 0]
    target_mean, target_cov = twin.transition @ x, twin.process_covariance
    errors = []
    for S in (8, 32, 128, 512, 2048):
        sched = Schedule(substeps=S, sigma_max=200.0, sigma_min=0.002, sigma_out=0.0001)
        mean, cov = sampler_transition_moments(twin, sched, x)
        errors.append(
            ((cov - target_cov).abs().max().item(), (mean - target_mean).abs().max().item())
        )
    cov_errors = [e[0] for e in errors]
    assert all(a > b for a, b in itertools.pairwise(cov_errors)), cov_errors
    # First-order convergence in 1/S: quadrupling S divides the error by about 4.
    assert cov_errors[-1] < 3e-3 and errors[-1][1] < 1e-4, errors
    assert 3.0 < cov_errors[-2] / cov_errors[-1] < 5.0, cov_errors
    # At large S the Monte-Carlo transition matches N(A x, Q) within its error.
    sched = Schedule(substeps=512, sigma_max=200.0, sigma_min=0.002, sigma_out=0.0001)
    ardm = analytic_ardm(twin, sched)
    n = 20000
    out = ardm.step(x.expand(n, 1, 1, DIM).clone(), torch.Generator().manual_seed(9))[:, 0]
    d = torch.diagonal(target_cov)
    cov_se = torch.sqrt((torch.outer(d, d) + target_cov**2) / n)
    assert ((torch.cov(out.T) - target_cov).abs() < 4.5 * cov_se + cov_errors[3]).all()
    assert ((out.mean(0) - target_mean).abs() < 4.5 * torch.sqrt(d / n)).all()


def test_deterministic_sampler_refuses_controls_and_weights(twin):
    sched = Schedule(substeps=4, eta=0.0)
    with pytest.raises(DeterministicSamplerError, match="eta"):
        sched.require_stochastic("smc")
    ardm = analytic_ardm(twin, sched)
    res = ardm.step_frame(context(4), torch.Generator().manual_seed(0), guidance=ZeroGuidance())
    assert torch.isfinite(res.frame).all()
    with pytest.raises(DeterministicSamplerError, match="undefined"):
        ardm.step_frame(
            context(4),
            torch.Generator().manual_seed(0),
            guidance=FunctionGuidance(lambda st: 0.1 * torch.ones_like(st.z)),
        )


def test_gradient_guidance_sees_a_differentiable_x0_hat(twin):
    ardm = analytic_ardm(twin, Schedule(substeps=4, sigma_max=20.0))
    seen = []

    def grad_control(st):
        loss = -(st.x0_hat**2).sum()
        (grad,) = torch.autograd.grad(loss, st.z)
        seen.append(grad.abs().sum().item())
        return 0.1 * grad

    with torch.no_grad():
        res = ardm.step_frame(
            context(8),
            torch.Generator().manual_seed(1),
            guidance=FunctionGuidance(grad_control, needs_grad=True),
        )
    assert len(seen) == 4 and all(v > 0 for v in seen)
    assert not res.frame.requires_grad
    assert (res.kl > 0).all()


def test_bad_context_is_rejected(twin):
    ardm = analytic_ardm(twin)
    with pytest.raises(ValueError, match="context"):
        ardm.step(torch.zeros(2, 1, 1, DIM + 1))
    with pytest.raises(ValueError, match="sigma_max"):
        Schedule(sigma_max=0.01, sigma_min=0.1)
