"""The systems registry: one entry per system, used by data, regimes, artifacts and the bench."""

from __future__ import annotations

import json
import math
from types import MappingProxyType

import pytest
import torch

from ardm_infer import metrics
from ardm_infer.data import default_data_config, load_dataset, make_solver
from ardm_infer.dynamics import Lorenz96, Lorenz96Config
from ardm_infer.observe import Stride, parse_regime, preset
from ardm_infer.systems import (
    DataSizes,
    NormalisedProcess,
    System,
    available_systems,
    canonical_name,
    get_system,
    lookup_system,
    register_system,
    unregister_system,
)
from ardm_infer.systems.kolmogorov import dissipation, enstrophy
from ardm_infer.systems.ks import total_variation
from ardm_infer.systems.lorenz96 import mean_energy

F64 = torch.float64


def test_shipped_rows_and_spellings():
    assert available_systems() == ("ks", "kolmogorov", "lorenz96")
    assert canonical_name("Kuramoto_Sivashinsky") == "ks"
    assert canonical_name(" KOLMOGOROV 2D ") == "kolmogorov"
    assert canonical_name("L96") == "lorenz96"
    assert lookup_system("navier-stokes") is None and lookup_system(3) is None
    with pytest.raises(ValueError, match="did you mean 'kolmogorov'"):
        get_system("kolmogorv")
    with pytest.raises(ValueError, match="already"):
        register_system(type(get_system("ks"))())


@pytest.mark.parametrize("name", ["ks", "kolmogorov", "lorenz96"])
def test_frame_shape_data_config_and_solver_agree(name):
    system = get_system(name)
    config = default_data_config(name)
    assert config.solver == system.solver_config()
    sizes = system.data_sizes
    assert (config.train, config.val, config.test, config.frames, config.burn_in) == (
        sizes.train,
        sizes.val,
        sizes.test,
        sizes.frames,
        sizes.burn_in,
    )
    solver = make_solver(name, config.solver)
    assert tuple(solver.frame_shape) == system.frame_shape(config.solver)
    assert len(system.frame_shape(None)) == 1 + len(system.space_dims)
    # the card form of a solver config (a dict) gives the same shape
    as_dict = json.loads(json.dumps(config.to_dict()))["solver"]
    assert system.frame_shape(as_dict) == system.frame_shape(config.solver)
    assert system.short_horizon < system.long_horizon
    assert system.quick_horizon + 8 < sizes.frames
    assert set(system.preset_strides) == {"dense", "sparse"}
    assert system.physics_label and system.field_label and system.title


def test_shipped_ardm_frame_shapes_come_from_the_registry():
    from ardm_infer import load_ardm

    for name in ("ks", "kolmogorov"):
        ardm = load_ardm(get_system(name).shipped_ardm)
        solver = ardm.card["data_config"]["solver"]
        assert tuple(ardm.frame_shape) == get_system(name).frame_shape(solver)


def test_physics_diagnostics_closed_forms():
    u = torch.tensor([[0.0, 1.0, 3.0, 1.0], [2.0, 2.0, 2.0, 2.0]], dtype=F64)
    torch.testing.assert_close(total_variation(u), torch.tensor([6.0, 0.0], dtype=F64))
    n = 16
    x = torch.arange(n, dtype=F64) * 2 * math.pi / n
    vorticity = torch.stack([2 * torch.cos(4 * x)[:, None].expand(n, n), torch.full((n, n), 3.0)])
    torch.testing.assert_close(enstrophy(vorticity), torch.tensor([1.0, 4.5], dtype=F64))
    torch.testing.assert_close(
        dissipation(vorticity, viscosity=1e-3), torch.tensor([2e-3, 9e-3], dtype=F64)
    )
    state = torch.tensor([[1.0, -1.0, 3.0, 1.0]], dtype=F64)
    torch.testing.assert_close(mean_energy(state), torch.tensor([1.5], dtype=F64))
    # the systems' own diagnostics use them on (..., channels, *space) fields
    kolmogorov = get_system("kolmogorov")
    fields = vorticity[:, None]
    viscosity = 1.0 / kolmogorov.solver_config().reynolds
    torch.testing.assert_close(
        kolmogorov.physics(fields, kolmogorov.solver_config()), dissipation(vorticity, viscosity)
    )
    torch.testing.assert_close(get_system("ks").physics(u[:, None], None), total_variation(u))


def test_diagnostics_keep_dtype_and_do_not_mutate():
    g = torch.Generator().manual_seed(0)
    fields = torch.randn(5, 3, 1, 8, 8, generator=g)
    line = torch.randn(5, 3, 1, 16, generator=g)
    copies = fields.clone(), line.clone()
    outputs = [
        total_variation(line[..., 0, :]),
        enstrophy(fields[..., 0, :, :]),
        dissipation(fields[..., 0, :, :], 1e-3),
        mean_energy(line[..., 0, :]),
        get_system("kolmogorov").spectrum(fields),
        get_system("ks").spectrum(line),
        get_system("lorenz96").spectrum(line),
    ]
    assert torch.equal(fields, copies[0]) and torch.equal(line, copies[1])
    for output in outputs:
        assert output.dtype == torch.float32
    torch.testing.assert_close(
        get_system("ks").spectrum(line),
        metrics.energy_spectrum(line[..., 0, :], space_dims=1, reduce_batch=False),
    )
    torch.testing.assert_close(
        get_system("kolmogorov").spectrum(fields),
        metrics.kolmogorov_energy_spectrum(fields[..., 0, :, :], reduce_batch=False),
    )


def test_normalised_process_is_the_solver_in_other_units():
    solver = Lorenz96(Lorenz96Config())
    g = torch.Generator().manual_seed(1)
    physical = 8 + torch.randn(4, 1, 1, 40, generator=g, dtype=F64)
    identity = NormalisedProcess(solver, torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64))
    assert torch.equal(identity.step(physical), solver.step(physical))
    mean, std = torch.tensor([2.0], dtype=F64), torch.tensor([3.5], dtype=F64)
    scaled = NormalisedProcess(solver, mean, std)
    z = (physical - mean) / std
    torch.testing.assert_close(scaled.step(z), (solver.step(physical) - mean) / std)
    assert scaled.frame_shape == (1, 40) and scaled.context_length == 1
    assert scaled.stochastic is False


class TinyRing(System):
    """A new system for the test: Lorenz-96 on 12 variables (one class plus one row)."""

    name = "tiny-ring"
    aliases = ("tinyring",)
    title = "Lorenz-96 (12 variables)"
    short_title = "ring"
    space_dims = ("x",)
    field_label = "x"
    physics_name = "mean energy"
    physics_label = "mean energy"
    preset_strides = MappingProxyType({"dense": 4, "sparse": 3})
    quick_horizon = 4
    short_horizon = 8
    long_horizon = 16
    solver_config_type = Lorenz96Config
    data_sizes = DataSizes(train=3, val=1, test=2, frames=20, burn_in=2.0)

    def solver_config(self, values=None):
        if values is None:
            return Lorenz96Config(variables=12)
        return super().solver_config(values)

    def make_solver(self, solver_config):
        return Lorenz96(self.solver_config(solver_config))

    def space_shape(self, solver_config):
        return (self.solver_config(solver_config).variables,)

    def physics(self, fields, solver_config):
        return mean_energy(fields[..., 0, :])


@pytest.fixture
def tiny_ring(tmp_path, monkeypatch):
    monkeypatch.setenv("ARDM_INFER_CACHE", str(tmp_path / "cache"))
    register_system(TinyRing())
    try:
        yield get_system("tinyring")
    finally:
        unregister_system("tiny-ring")
    assert lookup_system("tinyring") is None


def test_a_new_system_is_one_class_and_one_row(tiny_ring):
    from ardm_infer.bench import benchmark

    assert preset("sparse", "tiny-ring").spatial == Stride(3)
    assert parse_regime("dense") == preset("dense", "tiny-ring")  # strides agree: no pde needed
    data = load_dataset("tiny-ring")
    assert data.test.shape == (2, 20, 1, 12)
    ds = benchmark(
        "tinyring",
        strategies=["forecast", "enkf"],
        regimes=["sparse"],
        trajectories=2,
        members=3,
        progress=False,
        initial="exact",
    )
    assert ds.attrs["pde"] == "tiny-ring" and json.loads(ds.attrs["config"])["ardm"] == "solver"
    assert ds.sizes["x"] == 12 and ds.sizes["time"] == 4
    assert not ds.failed.values.any()
    truth = data.test[:2, 1:5, 0].double()
    torch.testing.assert_close(
        torch.from_numpy(ds.truth_physics.values), mean_energy(truth), rtol=1e-5, atol=1e-6
    )
