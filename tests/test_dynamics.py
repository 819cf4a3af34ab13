"""Numerical truth: convergence order, invariants, batching, the exact Kalman oracle."""

from __future__ import annotations

import math

import pytest
import torch

from ardm_infer.dynamics import (
    KolmogorovConfig,
    KolmogorovFlow,
    KSConfig,
    KuramotoSivashinsky,
    LinearGaussianTwin,
    Lorenz96,
    kalman_filter,
)
from ardm_infer.process import Process, rollout


def _order(solve, h0: float, T: float) -> list[float]:
    """Observed convergence orders for steps h0, h0/2, h0/4 against a fine reference (h0/64)."""
    ref = solve(h0 / 64, round(T / (h0 / 64)))
    errors = []
    for h in (h0, h0 / 2, h0 / 4):
        errors.append((solve(h, round(T / h)) - ref).abs().max().item())
    return [math.log2(errors[i] / errors[i + 1]) for i in range(2)]


def test_ks_etdrk4_is_fourth_order():
    """ETDRK4 on stiff KS shows the known pre-asymptotic order reduction (Hochbruck &
    Ostermann 2005): about 2.8 at h = 0.4, rising to 4 as h shrinks.  We check the
    asymptotic range."""
    ks = KuramotoSivashinsky(KSConfig(length=32.0, grid=64, dt=0.1, output_interval=0.1))
    g = torch.Generator().manual_seed(1)
    u0 = ks.integrate(ks.random_initial_condition(2, g), 300)  # on the attractor
    orders = _order(lambda h, n: ks.integrate(u0, n, dt=h), h0=0.025, T=1.0)
    assert all(3.3 < p < 4.6 for p in orders), orders
    assert orders[1] > orders[0]  # approaching 4 from below


def test_kolmogorov_etdrk4_is_fourth_order():
    kf = KolmogorovFlow(
        KolmogorovConfig(reynolds=100.0, grid=32, output_grid=32, dt=0.02, output_interval=0.02)
    )
    g = torch.Generator().manual_seed(2)
    w0 = kf.random_initial_condition(2, g)
    orders = _order(lambda h, n: kf.integrate(w0, n, dt=h), h0=0.05, T=0.4)
    assert all(3.6 < p < 4.6 for p in orders), orders


def test_lorenz96_rk4_is_fourth_order():
    l96 = Lorenz96()
    g = torch.Generator().manual_seed(3)
    x0 = l96.integrate(l96.random_initial_condition(3, g), 200)
    orders = _order(lambda h, n: l96.integrate(x0, n, dt=h), h0=0.04, T=0.8)
    assert all(3.6 < p < 4.6 for p in orders), orders


def test_ks_conserves_spatial_mean():
    ks = KuramotoSivashinsky()
    g = torch.Generator().manual_seed(4)
    u0 = ks.random_initial_condition(3, g) + torch.tensor(
        [[0.0], [0.3], [-1.2]], dtype=torch.float64
    )
    u = ks.integrate(u0, 2000)
    assert torch.isfinite(u).all()
    assert u.std() > 0.5  # it went chaotic, not to a trivial state
    torch.testing.assert_close(u.mean(-1), u0.mean(-1), atol=1e-10, rtol=0)


def test_kolmogorov_energy_budget_in_steady_state():
    """dE/dt = <u.F> - nu <w^2> - 2 alpha E, integrated over a window of the steady state."""
    cfg = KolmogorovConfig(reynolds=200.0, grid=32, output_grid=32, dt=0.02, output_interval=0.02)
    kf = KolmogorovFlow(cfg)
    g = torch.Generator().manual_seed(5)
    w = kf.integrate(kf.random_initial_condition(2, g), 1000)  # 20 time units of spin-up
    energies, rates = [], []
    for _ in range(201):
        b = kf.energy_budget(w)
        energies.append(b["energy"])
        rates.append(b["power"] - b["dissipation"] - b["drag"])
        w = kf.integrate(w, 1)
    E = torch.stack(energies)
    R = torch.stack(rates)
    # Steady state: energy stays within a band and the forcing does non-trivial work.
    assert (E.max(0).values / E.min(0).values < 3).all()
    integral = cfg.dt * (R[1:-1].sum(0) + 0.5 * (R[0] + R[-1]))  # trapezoid
    change = E[-1] - E[0]
    scale = cfg.dt * R.abs().sum(0)
    assert ((change - integral).abs() < 1e-3 * scale).all(), (change, integral, scale)
    # Instantaneous budget by central differences.
    dEdt = (E[2:] - E[:-2]) / (2 * cfg.dt)
    assert ((dEdt - R[1:-1]).abs().max(0).values < 2e-3 * R.abs().max(0).values + 1e-6).all()


@pytest.mark.parametrize(
    "solver",
    [
        KuramotoSivashinsky(KSConfig(length=32.0, grid=64)),
        KolmogorovFlow(
            KolmogorovConfig(reynolds=200.0, grid=32, output_grid=16, dt=0.05, output_interval=0.1)
        ),
        Lorenz96(),
    ],
    ids=["ks", "kolmogorov", "lorenz96"],
)
def test_batch_equals_one_by_one(solver):
    g = torch.Generator().manual_seed(6)
    x0 = solver.random_initial_condition(3, g)
    batched = solver.trajectory(x0, 5)
    single = torch.cat([solver.trajectory(x0[i : i + 1], 5) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-11, rtol=1e-11)


def test_solvers_are_processes_and_device_dtype_agnostic():
    ks = KuramotoSivashinsky(KSConfig(length=32.0, grid=64))
    assert isinstance(ks, Process)
    g = torch.Generator().manual_seed(7)
    u0 = ks.random_initial_condition(2, g, dtype=torch.float32)
    out = rollout(ks, u0[:, None, None, :], steps=4)
    assert out.shape == (2, 4, 1, 64) and out.dtype == torch.float32
    ref = ks.trajectory(u0.double(), 4)
    torch.testing.assert_close(out[:, :, 0].double(), ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="context"):
        rollout(ks, u0, steps=1)


def _joint_gaussian(twin, T, m0, P0):
    """Mean and covariance of (x_1, ..., x_T) stacked, by brute force."""
    A, Q = twin.transition, twin.process_covariance
    d = A.shape[0]
    means, covs = [], {}
    m, P = m0, P0
    for t in range(T):
        m = A @ m
        P = A @ P @ A.T + Q
        means.append(m)
        covs[(t, t)] = P
    big = torch.zeros(T * d, T * d, dtype=A.dtype)
    for s in range(T):
        for t in range(s, T):
            C = torch.linalg.matrix_power(A, t - s) @ covs[(s, s)]  # Cov(x_t, x_s)
            big[t * d : (t + 1) * d, s * d : (s + 1) * d] = C
            big[s * d : (s + 1) * d, t * d : (t + 1) * d] = C.T
    return torch.cat(means), big


def test_kalman_filter_matches_brute_force_gaussian_conditioning():
    twin = LinearGaussianTwin.default(dim=4)
    T, d, sigma = 4, 4, 0.7
    g = torch.Generator().manual_seed(8)
    m0 = torch.zeros(d, dtype=torch.float64)
    P0 = torch.eye(d, dtype=torch.float64)
    x0 = m0 + torch.randn(1, d, generator=g, dtype=torch.float64)
    truth = twin.trajectory(x0, T, generator=g)
    mask = torch.rand(T, d, generator=g) < 0.6
    mask[0, 0] = True
    y = truth + sigma * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    res = kalman_filter(twin, y, mask, sigma, m0, P0)

    mu, C = _joint_gaussian(twin, T, m0, P0)
    obs = mask.reshape(-1)
    Cyy = C[obs][:, obs] + sigma**2 * torch.eye(int(obs.sum()), dtype=torch.float64)
    yv = y.reshape(-1)[obs]
    ll = torch.distributions.MultivariateNormal(mu[obs], Cyy).log_prob(yv)
    torch.testing.assert_close(res.log_likelihood[0], ll, atol=1e-7, rtol=1e-7)
    # Filtering mean at the last time = E[x_T | all y].
    last = slice((T - 1) * d, T * d)
    gain = C[last][:, obs] @ torch.linalg.inv(Cyy)
    post_mean = mu[last] + gain @ (yv - mu[obs])
    post_cov = C[last][:, last] - gain @ C[obs][:, last]
    torch.testing.assert_close(res.mean[0, -1], post_mean, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(res.covariance[0, -1], post_cov, atol=1e-7, rtol=1e-7)


def test_kalman_filter_with_no_observations_is_the_prior():
    twin = LinearGaussianTwin.default(dim=3)
    y = torch.zeros(2, 5, 3, dtype=torch.float64)
    mask = torch.zeros(5, 3, dtype=torch.bool)
    m0 = torch.ones(3, dtype=torch.float64)
    res = kalman_filter(twin, y, mask, 0.5, m0, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(res.mean, res.predicted_mean)
    torch.testing.assert_close(res.log_likelihood, torch.zeros(2, dtype=torch.float64))


def test_linear_gaussian_twin_transition_statistics():
    twin = LinearGaussianTwin.default(dim=3)
    g = torch.Generator().manual_seed(9)
    n = 40000
    x = torch.ones(n, 3, dtype=torch.float64)
    out = twin.transition_step(x, g)
    mean_expected = twin.transition @ torch.ones(3, dtype=torch.float64)
    se = (torch.diagonal(twin.process_covariance) / n).sqrt()
    assert ((out.mean(0) - mean_expected).abs() < 5 * se).all()
    cov = torch.cov(out.T)
    assert torch.allclose(cov, twin.process_covariance, atol=5 * 0.5 * math.sqrt(2 / n) + 1e-3)
