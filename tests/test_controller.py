"""The amortised controller (CA-ARDM): preview buffer, network, training, strategy."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ardm_infer.strategies.controller as controller_strategy
from ardm_infer.ardm import ARDM, Schedule, analytic_ardm
from ardm_infer.ardm.nets import build_denoiser
from ardm_infer.ardm.training import ardm_presets
from ardm_infer.controller import (
    ControllerConfig,
    ControllerGuidance,
    ControllerTrainConfig,
    Preview,
    RegimeDistribution,
    build_controller,
    controlled_rollout,
    controller_presets,
    ensemble_statistics,
    load_controller,
    preview_window,
    train_controller,
)
from ardm_infer.dynamics import LinearGaussianTwin, kalman_filter
from ardm_infer.guidance import SubStepState
from ardm_infer.observe import parse_regime
from ardm_infer.strategies import assimilate, make_problem

DIM = 8
SPEC = "stride=2, every=1, sigma=0.3"
SCHEDULE = Schedule(substeps=8, sigma_max=50.0, sigma_min=0.01, sigma_out=0.001)


def twin_frames(trajectories, horizon, seed, stationary=True):
    """``(trajectories, 1 + horizon, 1, DIM)`` float64 frames of the twin."""
    twin = LinearGaussianTwin.default(dim=DIM)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(trajectories, DIM, generator=g, dtype=torch.float64)
    if stationary:
        x0 = x0 @ torch.linalg.cholesky(twin.stationary_covariance()).T
    frames = torch.cat([x0[:, None], twin.trajectory(x0, horizon, g)], 1).unsqueeze(2)
    return frames, g


def randomised_network(config, seed=0):
    """A controller whose (normally zero) output layer is random, so its output is not 0."""
    net = build_controller(config, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        w = net.out_conv.conv.weight
        w.copy_(0.3 * torch.randn(w.shape, generator=g))
    return net.eval()


@pytest.fixture(scope="module")
def twin_setup():
    twin = LinearGaussianTwin.default(dim=DIM)
    ardm = analytic_ardm(twin, SCHEDULE)
    frames, g = twin_frames(6, 8, seed=3)
    problem = make_problem(frames, 1, SPEC, g)
    return twin, ardm, problem


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A controller trained briefly on the twin (Lambda = 1, beta = 1, w = 0)."""
    twin = LinearGaussianTwin.default(dim=DIM)
    ardm = analytic_ardm(twin, SCHEDULE)
    frames, _ = twin_frames(64, 20, seed=5)
    config = ControllerConfig(
        dims=1,
        channels=1,
        context_frames=1,
        preview=1,
        width=16,
        blocks=2,
        dilations=(1, 2),
        embedding_dim=32,
        fourier_features=16,
    )
    train = ControllerTrainConfig(
        steps=150,
        batch_size=16,
        lr=3e-3,
        warmup_steps=10,
        val_every=50,
        val_batches=2,
        checkpoint_every=0,
        regimes=SPEC,
    )
    out = tmp_path_factory.mktemp("controller")
    result = train_controller(ardm, frames.float(), config, train, out, progress=False)
    return twin, ardm, result


# ------------------------------------------------------------------------------ preview buffer


def test_preview_window_content_padding_and_offsets():
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(3, 5, 1, 4, generator=g)
    mask = torch.rand(5, 1, 4, generator=g) < 0.5
    obs = obs * mask  # lifted
    pv = preview_window(obs, mask, 3, 4)
    assert pv.y.shape == pv.mask.shape == (3, 4, 1, 4)
    assert torch.equal(pv.offset, torch.arange(1, 5))
    assert torch.equal(pv.y[:, :2], obs[:, 3:5])
    assert torch.equal(pv.mask[:, :2], mask[3:5].float().expand(3, 2, 1, 4))
    assert not pv.y[:, 2:].any() and not pv.mask[:, 2:].any()  # past the horizon
    # y is zero where unobserved even if the lifted array holds garbage there
    garbage = torch.where(mask, obs, torch.full_like(obs, 7.0))
    assert torch.equal(preview_window(garbage, mask, 0, 5).y, preview_window(obs, mask, 0, 5).y)
    # per-trajectory masks
    per = torch.rand(3, 5, 1, 4, generator=g) < 0.5
    assert torch.equal(preview_window(obs, per, 1, 2).mask, per[:, 1:3].float())
    with pytest.raises(ValueError, match="Lambda"):
        preview_window(obs, mask, 0, 0)


@settings(max_examples=15, deadline=None)
@given(
    t=st.integers(0, 7),
    window=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    substep=st.integers(1, 4),
)
def test_preview_never_exposes_observations_beyond_the_window(t, window, seed, substep):
    """Changing observations (values and masks) after frame t + Lambda - 1 changes nothing;
    changing one inside the window changes the control (so the test can fail)."""
    horizon = 12  # > t + window: observations exist beyond every window drawn
    g = torch.Generator().manual_seed(seed)
    config = ControllerConfig(
        dims=1, channels=1, context_frames=1, preview=window, width=8, blocks=2, groups=4
    )
    net = randomised_network(config, seed)
    obs = torch.randn(2, horizon, 1, DIM, generator=g)
    mask = torch.rand(horizon, 1, DIM, generator=g) < 0.5
    mask[t] = True  # the window is never empty
    far_obs, far_mask = obs.clone(), mask.clone()
    far_obs[:, t + window :] = 100 * torch.randn(far_obs[:, t + window :].shape, generator=g)
    far_mask[t + window :] = ~mask[t + window :]
    z = torch.randn(4, 1, DIM, generator=g)
    x0 = torch.randn(4, 1, DIM, generator=g)
    ctx = torch.randn(4, 1, 1, DIM, generator=g)
    sigma, sigma_next, tau, _ = SCHEDULE.coefficients(substep)

    def control(o, m):
        pv = preview_window(o * m, m, t, window)
        guide = ControllerGuidance(net, pv.y, pv.mask, 0.3)
        state = SubStepState(
            frame=t,
            substep=substep,
            substeps=SCHEDULE.substeps,
            z=z,
            sigma=sigma,
            sigma_next=sigma_next,
            x0_hat=x0,
            mean=z,
            tau=tau,
            context=ctx,
        )
        with torch.no_grad():
            return guide.control(state)

    base = control(obs, mask)
    assert torch.equal(control(far_obs, far_mask), base)
    near = obs.clone()
    near[:, t + window - 1] += 1.0
    near_mask = mask.clone()
    near_mask[t + window - 1] = True
    assert not torch.equal(control(near, near_mask), base)


def test_strategy_frames_do_not_depend_on_observations_beyond_the_window(twin_setup):
    _, ardm, problem = twin_setup
    window, upto = 2, 3
    config = ControllerConfig(
        dims=1, channels=1, context_frames=1, preview=window, width=8, blocks=2, groups=4
    )
    net = randomised_network(config)
    changed = problem.observation.clone()
    changed[:, upto + window :] += 5.0
    other = dataclasses.replace(problem, observation=changed)
    runs = [
        assimilate(
            ardm,
            p,
            "controller",
            members=3,
            generator=torch.Generator().manual_seed(4),
            controller=net,
        ).ensemble
        for p in (problem, other)
    ]
    assert torch.equal(runs[0][:, :, : upto + 1], runs[1][:, :, : upto + 1])
    assert not torch.equal(runs[0], runs[1])


# ------------------------------------------------------------------------------ network


def test_untrained_controller_is_the_prior_bit_for_bit(twin_setup):
    _, ardm, problem = twin_setup
    net = build_controller(ControllerConfig(dims=1, channels=1, context_frames=1, preview=3))
    a = assimilate(
        ardm,
        problem,
        "controller",
        members=5,
        generator=torch.Generator().manual_seed(9),
        controller=net,
    )
    b = assimilate(ardm, problem, "forecast", members=5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.ensemble, b.ensemble)
    assert all(bool((kl == 0).all()) for kl in a.diagnostics["kl"])
    assert a.diagnostics["controller_calls"] > 0  # the network did run


def test_kernel_reports_the_kl_of_the_controller_output(twin_setup):
    """KL of every sub-step = |f_psi|^2 / 2 with f recomputed from the recorded inputs."""
    _, ardm, problem = twin_setup
    config = ControllerConfig(dims=1, channels=1, context_frames=1, preview=2, width=8, groups=4)
    net = randomised_network(config, seed=3)
    pv = preview_window(problem.observation.float(), problem.mask, 0, 2)
    ctx = problem.context.float()
    guide = ControllerGuidance(net, pv.y, pv.mask, problem.sigma)
    with torch.no_grad():
        res = ardm.step_frame(ctx, torch.Generator().manual_seed(0), guidance=guide, record=True)
        total = torch.zeros_like(res.kl)
        for info in res.substeps:
            f = net(
                info.latent,
                info.sigma,
                info.tau,
                info.x0_hat,
                ctx,
                Preview(pv.y, pv.mask, pv.offset),
                problem.sigma,
            )
            expected = 0.5 * f.square().sum((1, 2))
            torch.testing.assert_close(info.kl, expected, rtol=1e-5, atol=1e-6)
            total += expected
    assert bool((total > 0).all())
    torch.testing.assert_close(res.kl, total, rtol=1e-5, atol=1e-5)


def test_network_2d_shapes_zero_output_and_config_roundtrip():
    config = ControllerConfig(
        dims=2, channels=1, context_frames=2, preview=2, width=8, blocks=2, patch_size=2, groups=4
    )
    assert ControllerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        ControllerConfig.from_dict({**config.to_dict(), "bogus": 1})
    net = build_controller(config)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 1, 8, 8, generator=g)
    pv = Preview(
        torch.randn(3, 2, 1, 8, 8, generator=g), torch.ones(3, 2, 1, 8, 8), torch.arange(1, 3)
    )
    out = net(z, 1.0, 0.5, z, torch.randn(3, 2, 1, 8, 8, generator=g), pv, 0.1)
    assert out.shape == z.shape and not out.any()
    random = randomised_network(config)
    shifted = random(
        z.roll(2, -1),
        1.0,
        0.5,
        z.roll(2, -1),
        torch.zeros(3, 2, 1, 8, 8),
        Preview(pv.y.roll(2, -1), pv.mask, pv.offset),
        0.1,
    )
    plain = random(z, 1.0, 0.5, z, torch.zeros(3, 2, 1, 8, 8), pv, 0.1)
    torch.testing.assert_close(shifted, plain.roll(2, -1), rtol=1e-4, atol=1e-5)  # periodic


def test_state_output_on_the_last_substep_lands_in_the_frame(twin_setup):
    """active_substeps=1, output="state": the network is called once per frame (s = 1 only),
    its output is added to the frame unchanged (same noise), and the KL is |u|^2 / (2 tau_1^2)."""
    _, ardm, problem = twin_setup
    config = ControllerConfig(
        dims=1,
        channels=1,
        context_frames=1,
        preview=2,
        width=8,
        groups=4,
        active_substeps=1,
        output="state",
    )
    net = build_controller(config)
    with torch.no_grad():
        net.out_conv.conv.bias.fill_(0.25 / 0.3)  # trunk output 0.25 / sigma_y (sigma_y = 0.3)
    pv = preview_window(problem.observation.float(), problem.mask, 0, 2)
    ctx = problem.context.float()
    guide = ControllerGuidance(net, pv.y, pv.mask, problem.sigma)
    with torch.no_grad():
        plain = ardm.step_frame(ctx, torch.Generator().manual_seed(4))
        res = ardm.step_frame(ctx, torch.Generator().manual_seed(4), guidance=guide, record=True)
    assert guide.calls == ctx.shape[0]  # one sub-step of one frame
    observed = pv.mask.flatten(1).any(1)
    shift = torch.where(observed[:, None, None], 0.25, 0.0)
    torch.testing.assert_close(res.frame, plain.frame + shift, rtol=0, atol=1e-5)
    tau_1 = res.substeps[-1].tau
    expected_kl = observed.float() * 0.25**2 * DIM / (2 * tau_1**2)
    torch.testing.assert_close(res.kl, expected_kl, rtol=1e-4, atol=1e-3)
    for bad in ({"output": "delta"}, {"active_substeps": 0}):
        with pytest.raises(ValueError):
            ControllerConfig(dims=1, channels=1, context_frames=1, **bad)


# ------------------------------------------------------------------------------ regimes


def test_regime_distribution_draws_valid_masks():
    g = torch.Generator().manual_seed(0)
    fixed = RegimeDistribution.from_regime(parse_regime("stride=4, every=3, sigma=0.2"))
    mask, sigma = fixed.sample(64, 4, (1, 16), g)
    assert mask.shape == (64, 4, 1, 16) and mask.dtype == torch.bool
    assert torch.allclose(sigma, torch.full((64,), 0.2))
    frames_observed = mask.flatten(2).any(-1)  # (B, L)
    assert bool(frames_observed.any(1).all()), "every window must hold an observation"
    assert bool((frames_observed.sum(1) <= 2).all())  # every = 3 in 4 frames
    obs_mask = mask[frames_observed]  # (n, 1, 16)
    assert torch.equal(obs_mask[:, 0], (torch.arange(16) % 4 == 0).expand_as(obs_mask[:, 0]))
    rnd = RegimeDistribution.from_regime(parse_regime("fraction=0.25, every=1, sigma=0.1"))
    mask, _ = rnd.sample(8, 3, (1, 4, 4), g)
    assert bool((mask.flatten(2).sum(-1) == 4).all())  # exactly round(0.25 * 16) per frame
    wide = RegimeDistribution.randomised((1, 256))
    assert RegimeDistribution.from_dict(json.loads(json.dumps(wide.to_dict()))) == wide
    mask, sigma = wide.sample(200, 4, (1, 256), g)
    assert bool(((sigma >= 0.05) & (sigma <= 0.5)).all())
    counts = mask.flatten(2).sum(-1).float()
    assert counts.max() > counts[counts > 0].min()  # regimes do vary across windows
    with pytest.raises(ValueError, match="does not fit"):
        RegimeDistribution(strides=(32,)).sample(1, 1, (1, 16), g)


# ------------------------------------------------------------------------------ training


def test_controlled_rollout_objective_is_per_window(twin_setup):
    """J's terms are per window (B,), the terminal cost is l(y_j, x_j) summed over frames,
    and the arrival cost is w sum_s l(y_j, x0_hat_{j,s})."""
    _, ardm, _ = twin_setup
    net = build_controller(ControllerConfig(dims=1, channels=1, context_frames=1, preview=2))
    frames, g = twin_frames(5, 3, seed=7)
    frames = frames.float()
    context, truth = frames[:, :1], frames[:, 1:]
    mask = torch.rand(truth.shape, generator=g) < 0.5
    sigma = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    obs = torch.where(
        mask, truth + sigma[:, None, None, None] * torch.randn(truth.shape, generator=g), 0.0
    )
    out = controlled_rollout(
        ardm,
        net,
        context,
        obs,
        mask,
        sigma,
        torch.Generator().manual_seed(0),
        arrival_weight=0.5,
    )
    for key in ("objective", "terminal", "arrival", "kl"):
        assert out[key].shape == (5,)
    residual = torch.where(mask, obs - out["frames"], 0.0) / sigma[:, None, None, None]
    torch.testing.assert_close(out["terminal"], 0.5 * residual.square().sum((1, 2, 3)))
    assert bool((out["kl"] == 0).all()) and bool((out["arrival"] > 0).all())
    torch.testing.assert_close(out["objective"], out["terminal"] + out["arrival"])


def test_truth_terminal_cost_is_the_full_state_error(twin_setup):
    """With ``truth``, the terminal cost is sum_j |x_j - truth_j|^2 / (2 sigma_y^2) over every
    point of every frame, observed or not; ``terminal`` must be one of the two names."""
    _, ardm, _ = twin_setup
    net = build_controller(ControllerConfig(dims=1, channels=1, context_frames=1, preview=2))
    frames, g = twin_frames(4, 3, seed=8)
    frames = frames.float()
    context, truth = frames[:, :1], frames[:, 1:]
    mask = torch.rand(truth.shape, generator=g) < 0.3
    sigma = torch.tensor([0.1, 0.2, 0.3, 0.4])
    obs = torch.where(mask, truth, 0.0)
    run = dict(truth=truth, terminal="truth")
    out = controlled_rollout(ardm, net, context, obs, mask, sigma, torch.Generator(), **run)
    expected = (out["frames"] - truth).square().sum((1, 2, 3)) / (2 * sigma**2)
    torch.testing.assert_close(out["terminal"], expected)
    torch.testing.assert_close(out["objective"], out["terminal"] + out["kl"])
    with pytest.raises(ValueError, match="truth must be"):
        controlled_rollout(
            ardm,
            net,
            context,
            obs,
            mask,
            sigma,
            torch.Generator(),
            truth=truth[:, :2],
            **{"terminal": "truth"},
        )
    with pytest.raises(ValueError, match="needs the true frames"):
        controlled_rollout(ardm, net, context, obs, mask, sigma, torch.Generator(), terminal="crps")
    with pytest.raises(ValueError, match="terminal"):
        ControllerTrainConfig(steps=1, batch_size=1, terminal="oracle")
    with pytest.raises(ValueError, match="members"):
        ControllerTrainConfig(steps=1, batch_size=1, terminal="crps", members=1)


def test_ensemble_windows_share_observations_and_score_the_fair_crps(twin_setup):
    """M members per window (rows m * B + b): the CRPS terminal is the fair CRPS of each
    window's members against its truth, over sigma_y, on every member's row; the
    ensemble statistics the network sees are per window."""
    _, ardm, _ = twin_setup
    config = ControllerConfig(
        dims=1, channels=1, context_frames=1, preview=2, width=8, groups=4, ensemble_inputs=True
    )
    net = randomised_network(config, seed=4)
    frames, g = twin_frames(3, 3, seed=9)
    frames = frames.float()
    members = 4
    context = frames[:, :1].repeat(members, 1, 1, 1)
    context = context + 0.1 * torch.randn(context.shape, generator=g)
    truth = frames[:, 1:]
    mask = torch.rand(truth.shape, generator=g) < 0.5
    sigma = torch.tensor([0.2, 0.3, 0.4])
    obs = torch.where(mask, truth, 0.0)
    out = controlled_rollout(
        ardm, net, context, obs, mask, sigma, torch.Generator(), truth=truth, terminal="crps"
    )
    ens = out["frames"].reshape(members, 3, *truth.shape[1:]).double()
    t = truth.double()
    skill = (ens - t).abs().mean(0)
    spread = sum((ens[i] - ens[j]).abs() for i in range(members) for j in range(members))
    crps = (skill - spread / (2 * members * (members - 1))).sum((1, 2, 3)) / sigma.double()
    torch.testing.assert_close(out["terminal"].double(), crps.repeat(members), rtol=1e-5, atol=1e-5)
    assert bool((out["kl"] > 0).all())
    x = torch.randn(members * 3, 1, DIM, generator=g)
    deviation, std = ensemble_statistics(x, 3)
    grouped = x.reshape(members, 3, 1, DIM)
    torch.testing.assert_close(deviation.reshape(grouped.shape), grouped - grouped.mean(0))
    torch.testing.assert_close(std.reshape(grouped.shape)[2], grouped.std(0))
    with pytest.raises(ValueError, match="ensemble_inputs"):
        net.features(
            x,
            torch.ones(12),
            torch.ones(12),
            x,
            x[:, None],
            Preview(torch.zeros(12, 2, 1, DIM), torch.zeros(12, 2, 1, DIM), torch.arange(1, 3)),
            torch.ones(12),
        )


def test_training_on_the_twin_moves_the_mean_toward_the_kalman_mean(trained):
    twin, ardm, result = trained
    history = result["history"]
    assert history[0]["val_kl"] == 0.0  # zero-initialised: the prior
    assert history[-1]["val_objective"] < 0.5 * history[0]["val_objective"]
    train_j = [h["train_objective"] for h in history if h["train_objective"] is not None]
    assert train_j[-1] < 0.8 * train_j[0]  # the first entry already averages steps 1-50
    assert result["final_val_kl"] > 0  # control energy is logged
    frames, g = twin_frames(12, 10, seed=11)
    problem = make_problem(frames, 1, SPEC, g)
    kf = kalman_filter(
        twin,
        problem.observation[:, :, 0],
        problem.mask[:, 0],
        problem.sigma,
        problem.context[:, 0, 0],
        torch.zeros(DIM, DIM, dtype=torch.float64),
    )
    errors = {}
    for name, extra in (("forecast", {}), ("controller", {"controller": result["network"]})):
        run = assimilate(
            ardm, problem, name, members=32, generator=torch.Generator().manual_seed(1), **extra
        )
        mean = run.ensemble.mean(0)[:, :, 0]
        errors[name] = float((mean - kf.mean).square().mean().sqrt())
    # forecast ~0.7, trained controller ~0.2 (sampling the one-step posterior from every
    # member's own past is not the Kalman filter, and a 32-member mean has an MC error ~0.07)
    assert errors["controller"] < 0.5 * errors["forecast"], errors


def test_artifact_roundtrip_and_corruption(trained, tmp_path):
    _, ardm, result = trained
    path = result["weights_path"]
    card = json.loads(result["card_path"].read_text())
    assert card["kind"] == "ardm_controller" and len(card["sha256"]) == 64
    assert card["regimes"] == RegimeDistribution.from_regime(parse_regime(SPEC)).to_dict()
    assert card["training_config"]["regimes"] == SPEC and "code_version" in card
    loaded = load_controller(path)
    reference = result["network"].state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())
    assert not any(p.requires_grad for p in loaded.parameters())
    # the strategy accepts the path
    frames, g = twin_frames(2, 4, seed=2)
    problem = make_problem(frames, 1, SPEC, g)
    by_path = assimilate(
        ardm,
        problem,
        "controller",
        members=4,
        generator=torch.Generator().manual_seed(0),
        controller=str(path),
    )
    by_net = assimilate(
        ardm,
        problem,
        "controller",
        members=4,
        generator=torch.Generator().manual_seed(0),
        controller=loaded,
    )
    assert torch.equal(by_path.ensemble, by_net.ensemble)
    # corruption of one byte is refused with a clear error
    bad = tmp_path / "bad.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "bad.json").write_text(result["card_path"].read_text())
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_controller(bad)
    (tmp_path / "bad.json").unlink()
    with pytest.raises(ValueError, match="no card"):
        load_controller(bad)


def test_training_resumes_exactly_and_smoke_presets_run(tmp_path):
    twin = LinearGaussianTwin.default(dim=DIM)
    ardm = analytic_ardm(twin, SCHEDULE)
    frames, _ = twin_frames(8, 8, seed=1)
    config = ControllerConfig(
        dims=1, channels=1, context_frames=1, preview=2, width=8, blocks=1, groups=4
    )
    train = ControllerTrainConfig(
        steps=4, batch_size=3, val_every=2, val_batches=1, checkpoint_every=1, regimes="randomised"
    )
    whole = train_controller(ardm, frames.float(), config, train, tmp_path / "a", progress=False)
    part = train_controller(
        ardm, frames.float(), config, train, tmp_path / "b", progress=False, stop_after=2
    )
    assert not part["completed"] and part["step"] == 2
    rest = train_controller(ardm, frames.float(), config, train, tmp_path / "b", progress=False)
    a, b = whole["network"].state_dict(), rest["network"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="different run"):
        train_controller(
            ardm,
            frames.float(),
            config,
            dataclasses.replace(train, beta=0.5),
            tmp_path / "b",
            progress=False,
        )
    # only the length may change on resume (extend / shorten); it is recorded in the card
    longer = train_controller(
        ardm,
        frames.float(),
        config,
        dataclasses.replace(train, steps=5),
        tmp_path / "b",
        progress=False,
    )
    assert longer["step"] == 5
    assert longer["network"].card["schedule_changes"] == [{"at_step": 4, "steps": [4, 5]}]
    with pytest.raises(ValueError, match="beyond"):
        train_controller(
            ardm,
            frames.float(),
            config,
            dataclasses.replace(train, steps=3),
            tmp_path / "b",
            progress=False,
        )
    # the smoke presets build, fit their PDE's frames and train on a tiny random ARDM
    for pde, shape in (("ks", (1, 16)), ("kolmogorov", (1, 8, 8))):
        ccfg, tcfg = controller_presets(pde)["smoke"]
        assert controller_presets(pde)["default"][0].dims == ccfg.dims
        assert ControllerTrainConfig.from_dict(json.loads(json.dumps(tcfg.to_dict()))) == tcfg
        dcfg = ardm_presets(pde)["smoke"][0]
        tiny = ARDM(build_denoiser(dcfg), Schedule(substeps=3), shape, 2)
        data = torch.randn(3, 8, *shape, generator=torch.Generator().manual_seed(0))
        out = train_controller(
            tiny, data, ccfg, dataclasses.replace(tcfg, steps=2), tmp_path / pde, progress=False
        )
        assert out["completed"] and not any(p.requires_grad for p in tiny.denoiser.parameters())


# ------------------------------------------------------------------------------ strategy


def test_strategy_is_deterministic_and_records_kl(trained, twin_setup):
    _, ardm, result = trained
    _, _, problem = twin_setup
    before = problem.observation.clone()
    runs = [
        assimilate(
            ardm,
            problem,
            "controller",
            members=4,
            generator=torch.Generator().manual_seed(s),
            controller=result["network"],
        )
        for s in (1, 1, 2)
    ]
    assert runs[0].ensemble.shape == (4, problem.trajectories, problem.horizon, 1, DIM)
    assert torch.equal(runs[0].ensemble, runs[1].ensemble)
    assert not torch.equal(runs[0].ensemble, runs[2].ensemble)
    kl = runs[0].diagnostics["kl"]
    assert len(kl) == problem.horizon and kl[0].shape == (4, problem.trajectories)
    assert all(bool((k > 0).all()) for k in kl)
    assert torch.equal(problem.observation, before)
    assert runs[0].cost.vjps == 0


def test_strategy_refuses_missing_controller_and_deterministic_sampler(twin_setup):
    _, ardm, problem = twin_setup
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="needs a trained controller"):
        assimilate(ardm, problem, "controller", members=2, generator=g)
    net = build_controller(ControllerConfig(dims=1, channels=1, context_frames=1, preview=1))
    with pytest.raises(ValueError, match="eta"):
        assimilate(
            ardm.with_schedule(dataclasses.replace(SCHEDULE, eta=0.0)),
            problem,
            "controller",
            members=2,
            generator=g,
            controller=net,
        )
    wrong = build_controller(ControllerConfig(dims=1, channels=1, context_frames=2, preview=1))
    with pytest.raises(ValueError, match="does not fit"):
        assimilate(ardm, problem, "controller", members=2, generator=g, controller=wrong)


def test_controller_proposal_in_smc(trained, twin_setup):
    import ardm_infer.strategies.smc  # noqa: F401  (the proposal needs smc registered)

    _, ardm, result = trained
    _, _, problem = twin_setup
    zero = build_controller(ControllerConfig(dims=1, channels=1, context_frames=1, preview=1))
    proposal = controller_strategy.controller_proposal(zero)
    guided = assimilate(
        ardm,
        problem,
        "smc",
        members=6,
        generator=torch.Generator().manual_seed(2),
        proposal=proposal,
    )
    boot = assimilate(ardm, problem, "smc", members=6, generator=torch.Generator().manual_seed(2))
    assert torch.equal(guided.ensemble, boot.ensemble)  # zero control: the bootstrap filter
    trained_run = assimilate(
        ardm,
        problem,
        "smc",
        members=6,
        generator=torch.Generator().manual_seed(2),
        proposal=controller_strategy.controller_proposal(result["network"]),
    )
    assert torch.isfinite(trained_run.ensemble).all()
    assert float(torch.stack(trained_run.diagnostics["kl"]).mean()) > 0


def test_cli_trains_in_slices_and_finishes_early(tmp_path, capsys):
    """``--stop-after`` checkpoints and stops; ``--steps`` equal to it finishes the run."""
    from ardm_infer.cli import main

    args = ["train-controller", "--pde", "ks", "--preset", "smoke", "--out", str(tmp_path)]
    assert main([*args, "--stop-after", "2"]) == 0
    assert "stopped at step 2" in capsys.readouterr().out
    assert not (tmp_path / "controller-ks.safetensors").exists()
    assert main([*args, "--steps", "2", "--regimes", "presets"]) == 2  # another run: refused
    assert main([*args, "--steps", "2"]) == 0
    assert (tmp_path / "controller-ks.safetensors").exists()
    card = json.loads((tmp_path / "controller-ks.json").read_text())
    assert card["steps_completed"] == 2
    assert card["schedule_changes"] == [{"at_step": 2, "steps": [6, 2]}]
    capsys.readouterr()
    other = [*args[:-1], str(tmp_path / "set"), "--steps", "1"]
    assert main([*other, "--set", "bogus=1"]) == 2
    assert "not a field" in capsys.readouterr().err
    assert main([*other, "--set", "terminal=oracle"]) == 2
    assert main([*other, "--set", "chain_reset=0.5", "--set", "output=state"]) == 0
    card = json.loads((tmp_path / "set" / "controller-ks.json").read_text())
    assert card["training_config"]["chain_reset"] == 0.5
    assert card["model_config"]["output"] == "state"
