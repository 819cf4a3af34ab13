"""Denoiser networks: EDM preconditioning, periodic equivariance, configs, explicit RNG."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ardm_infer.ardm.nets import (
    Denoiser,
    DenoiserConfig,
    UNet1d,
    UNet2d,
    build_denoiser,
    count_parameters,
    depth_to_space,
    space_to_depth,
)

CFG_1D = DenoiserConfig(
    dims=1, channels=1, context_frames=2, base_channels=8, channel_mult=(1, 2, 2), groups=4
)
CFG_2D = DenoiserConfig(
    dims=2, channels=2, context_frames=1, base_channels=8, channel_mult=(1, 2), groups=4
)
CFG_1D_PATCH = DenoiserConfig(
    dims=1, channels=1, context_frames=2, base_channels=8, channel_mult=(1, 2), patch_size=4
)


def randomised(config: DenoiserConfig, seed: int = 0) -> Denoiser:
    """A denoiser whose every parameter (also the zero-initialised ones) is random, float64."""
    model = build_denoiser(config, generator=torch.Generator().manual_seed(seed)).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def inputs(config: DenoiserConfig, space: tuple[int, ...], batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = config.channels
    z = torch.randn(batch, c, *space, generator=g, dtype=torch.float64)
    context = torch.randn(batch, config.context_frames, c, *space, generator=g, dtype=torch.float64)
    sigma = torch.exp(torch.randn(batch, generator=g, dtype=torch.float64))
    return z, sigma, context


@pytest.mark.parametrize(
    ("config", "space"), [(CFG_1D, (32,)), (CFG_2D, (8, 16)), (CFG_1D_PATCH, (32,))]
)
def test_output_shape_dtype_and_small_sigma_limit(config, space):
    model = randomised(config)
    z, sigma, context = inputs(config, space)
    out = model(z, sigma, context)
    assert out.shape == z.shape and out.dtype == z.dtype
    # sigma -> 0: c_skip -> 1 and c_out -> 0, so D(z) -> z (error O(sigma)).
    tiny = torch.full_like(sigma, 1e-7)
    torch.testing.assert_close(model(z, tiny, context), z, atol=1e-5, rtol=0)
    # ... but at sigma ~ 1 the network matters.
    assert (out - z).abs().max() > 1e-2


def test_preconditioning_coefficients():
    sd = 0.5
    model = build_denoiser(
        DenoiserConfig(dims=1, channels=1, context_frames=1, base_channels=4, sigma_data=sd)
    )
    sigma = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = model.preconditioning(sigma)
    for i, s in enumerate(sigma.tolist()):
        assert c_skip[i].item() == pytest.approx(sd**2 / (s**2 + sd**2))
        assert c_out[i].item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2))
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + sd**2))
        assert c_noise[i].item() == pytest.approx(math.log(s) / 4)


def test_fresh_denoiser_is_c_skip_times_z():
    # The output conv is zero-initialised: F = 0, so D = c_skip z exactly.
    model = build_denoiser(CFG_1D)
    z, sigma, context = inputs(CFG_1D, (16,))
    z, sigma, context = z.float(), sigma.float(), context.float()
    expected = z / (sigma**2 + 1)[:, None, None]
    torch.testing.assert_close(model(z, sigma, context), expected)


@pytest.mark.parametrize(
    ("config", "space"), [(CFG_1D, (32,)), (CFG_1D_PATCH, (32,)), (CFG_2D, (16, 8))]
)
def test_circular_shift_equivariance(config, space):
    model = randomised(config, seed=3)
    z, sigma, context = inputs(config, space, seed=4)
    out = model(z, sigma, context)
    f = config.downsampling_factor
    for axis in range(config.dims):
        for shift in (f, 3 * f, -f):
            zs = torch.roll(z, shift, dims=2 + axis)
            cs = torch.roll(context, shift, dims=3 + axis)
            expected = torch.roll(out, shift, dims=2 + axis)
            torch.testing.assert_close(model(zs, sigma, cs), expected, atol=1e-10, rtol=1e-10)
    if config.dims == 2:  # both axes at once
        zs = torch.roll(z, (f, 2 * f), dims=(2, 3))
        cs = torch.roll(context, (f, 2 * f), dims=(3, 4))
        torch.testing.assert_close(
            model(zs, sigma, cs), torch.roll(out, (f, 2 * f), dims=(2, 3)), atol=1e-10, rtol=0
        )


def test_output_depends_on_context_and_sigma():
    model = randomised(CFG_1D)
    z, sigma, context = inputs(CFG_1D, (32,))
    out = model(z, sigma, context)
    assert (model(z, sigma, context + 1.0) - out).abs().max() > 1e-3
    assert (model(z, sigma * 2, context) - out).abs().max() > 1e-3
    # a scalar sigma is broadcast over the batch
    torch.testing.assert_close(model(z, 0.7, context), model(z, torch.full((3,), 0.7), context))


def test_init_is_a_function_of_the_generator_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_denoiser(CFG_1D, generator=torch.Generator().manual_seed(5))
    b = build_denoiser(CFG_1D, generator=torch.Generator().manual_seed(5))
    c = build_denoiser(CFG_1D, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_config_round_trip_and_validation():
    for cfg in (CFG_1D, CFG_2D, CFG_1D_PATCH):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert DenoiserConfig.from_dict(d) == cfg
        assert build_denoiser(d).config == cfg
    with pytest.raises(ValueError, match="dims"):
        DenoiserConfig(dims=3, channels=1, context_frames=1)
    with pytest.raises(ValueError, match="unknown"):
        DenoiserConfig.from_dict({**CFG_1D.to_dict(), "bogus": 1})
    model = build_denoiser(CFG_1D)
    z, sigma, context = inputs(CFG_1D, (30,))  # 30 is not a multiple of 4
    with pytest.raises(ValueError, match="multiple"):
        model(z.float(), sigma.float(), context.float())
    with pytest.raises(ValueError, match="context"):
        model(z.float(), sigma.float(), context[:, :1].float())


def test_unets_and_space_to_depth():
    x = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(depth_to_space(space_to_depth(x, 4, 1), 4, 1), x)
    # space-to-depth puts each patch's points in the channel axis, in order
    y = space_to_depth(torch.arange(8.0).reshape(1, 1, 8), 2, 1)
    assert y[0, :, 0].tolist() == [0.0, 1.0] and y[0, :, 1].tolist() == [2.0, 3.0]
    net1 = UNet1d(3, 2, base_channels=8, channel_mult=(1, 2))
    net2 = UNet2d(3, 2, base_channels=8, channel_mult=(1, 2), patch_size=2)
    assert net1(x, torch.zeros(2)).shape == (2, 2, 16)
    assert net2(torch.randn(2, 3, 8, 8), torch.zeros(2)).shape == (2, 2, 8, 8)
    assert count_parameters(net1) > 0
