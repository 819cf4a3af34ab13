"""The initial condition of an assimilation problem: what the members know of the start.

The protocol names three (docs/design.md §7, docs/protocol.md):

``exact``
    Every member's context is the k true frames (the convention of the CA-ARDM paper). With
    an accurate ARDM the free forecast then stays close to the truth for a long time, so
    assimilation has little to correct early on.
``background``
    The twin-experiment start of the filtering literature: the start is uncertain. Each
    member's context is the true state ``spinup`` frames *earlier*, plus smooth random
    perturbations (the same on all k context frames, so the state is shifted but its tendency
    is kept), advanced ``spinup`` frames by the process itself. The perturbation of member i
    of a trajectory is ``error * (d_0 + d_i)``: ``d_0`` is common to the trajectory's members
    (the background mean is wrong) and ``d_i`` is the member's own (the ensemble's spread), both
    unit-rms fields with independent draws, so that at the perturbation time the truth is
    statistically like a member: mean error ~ ``error * sqrt(1 + 1/M)``, spread ~ ``error``.
    The spin-up lets each perturbed state relax onto the model's attractor and its error grow
    along the unstable directions of the flow, so the members are plausible states of the
    model, not noise-corrupted frames. The error level after the spin-up is measured and
    reported (:class:`Background`), not assumed.
``climatology``
    No knowledge of the start: each member's context is k consecutive frames drawn at random
    from unrelated trajectories (a pool the caller provides, e.g. other test trajectories).

Shapes: frames ``(trajectories, time, channels, *space)``; a background ensemble of contexts
``(members, trajectories, k, channels, *space)``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from .process import Process, rollout

__all__ = [
    "INITIAL_KINDS",
    "PROTOCOL_INITIAL",
    "Background",
    "InitialCondition",
    "draw_background",
    "parse_initial",
    "smooth_perturbation",
]

INITIAL_KINDS = ("exact", "background", "climatology")
"""The named initial conditions of the protocol."""

PROTOCOL_INITIAL = "background(error=0.05, spinup=8)"
"""The protocol's default start (docs/protocol.md): a background whose mean and members are
off by 0.05 rms (normalised units) eight frames before the start, spun up by the process.
The benchmark presets and the tuner use it; ``exact`` is the paper's convention."""


@dataclass(frozen=True)
class InitialCondition:
    """How the members' first context is obtained.

    Attributes:
        kind: one of :data:`INITIAL_KINDS`.
        error: ``background`` only: rms of the background mean's offset and of each member's
            deviation, added ``spinup`` frames before the start, in normalised units (> 0).
        spinup: ``background`` only: frames the process runs from the perturbed state (>= 0).
        wavenumbers: ``background`` only: the perturbation keeps Fourier modes with
            ``|k| < wavenumbers`` along every spatial axis (>= 1).
        members: ``background`` / ``climatology``: size of the drawn ensemble; a run may use
            at most this many members (>= 1).
    """

    kind: str = "exact"
    error: float = 0.1
    spinup: int = 8
    wavenumbers: int = 16
    members: int = 64

    def __post_init__(self) -> None:
        if self.kind not in INITIAL_KINDS:
            raise ValueError(
                f"initial condition kind must be one of {INITIAL_KINDS}, got {self.kind!r}"
            )
        if not (isinstance(self.error, int | float) and math.isfinite(self.error)):
            raise TypeError(f"initial error must be a finite number, got {self.error!r}")
        if self.error <= 0:
            raise ValueError(f"initial error must be > 0, got {self.error}")
        for name, low in (("spinup", 0), ("wavenumbers", 1), ("members", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"initial {name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"initial {name} must be >= {low}, got {value}")

    @property
    def lead(self) -> int:
        """True frames consumed before the context (the spin-up of ``background``)."""
        return self.spinup if self.kind == "background" else 0

    def spec(self) -> str:
        """The canonical spec string, parsed back by :func:`parse_initial`."""
        if self.kind == "exact":
            return "exact"
        if self.kind == "climatology":
            return f"climatology(members={self.members})"
        return (
            f"background(error={self.error:g}, spinup={self.spinup}, "
            f"wavenumbers={self.wavenumbers}, members={self.members})"
        )

    def __str__(self) -> str:
        return self.spec()


_SPEC = re.compile(r"^\s*([a-z]+)\s*(?:\((.*)\))?\s*$")


def parse_initial(spec: str | InitialCondition) -> InitialCondition:
    """An :class:`InitialCondition` from a spec string.

    Examples: ``"exact"``, ``"background"``, ``"background(error=0.05, spinup=16)"``,
    ``"climatology"``.  Unknown kinds or keys get an error listing what is expected.
    """
    if isinstance(spec, InitialCondition):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"initial condition must be a string or InitialCondition, got {spec!r}")
    match = _SPEC.match(spec.strip().lower())
    expected = "expected 'exact', 'climatology' or 'background(error=0.1, spinup=8)'"
    if match is None:
        raise ValueError(f"cannot parse initial condition {spec!r}; {expected}")
    kind, body = match.group(1), match.group(2)
    if kind not in INITIAL_KINDS:
        raise ValueError(f"unknown initial condition {kind!r}; {expected}")
    values: dict[str, float | int] = {}
    for part in filter(None, (p.strip() for p in (body or "").split(","))):
        key, sep, raw = (s.strip() for s in part.partition("="))
        if not sep or key not in ("error", "spinup", "wavenumbers", "members"):
            raise ValueError(
                f"bad item {part!r} in initial condition {spec!r}; keys are error, spinup, "
                "wavenumbers, members"
            )
        try:
            values[key] = float(raw) if key == "error" else int(raw)
        except ValueError:
            raise ValueError(
                f"{key}={raw!r} in initial condition {spec!r} is not a number"
            ) from None
    return InitialCondition(kind, **values)


def smooth_perturbation(
    shape: tuple[int, ...], spatial_dims: int, wavenumbers: int, generator: torch.Generator
) -> torch.Tensor:
    """A random field with unit rms per leading index and only low Fourier modes.

    Args:
        shape: ``(*batch, channels, *space)``; the last ``spatial_dims`` axes are periodic space.
        spatial_dims: number of spatial axes.
        wavenumbers: keep modes with ``|k| < wavenumbers`` along every spatial axis.
        generator: the source of randomness.

    Returns:
        ``shape``, float32 on the generator's device, rms 1 over ``(channels, *space)``.
    """
    noise = torch.randn(shape, generator=generator, device=generator.device)
    dims = tuple(range(-spatial_dims, 0))
    spec = torch.fft.rfftn(noise, dim=dims)
    for axis in dims[:-1]:
        n = spec.shape[axis]
        k = torch.fft.fftfreq(n, 1.0 / n, device=spec.device).abs()
        keep = (k < wavenumbers).reshape(n, *([1] * (-axis - 1)))
        spec = spec * keep
    spec[..., wavenumbers:] = 0
    field = torch.fft.irfftn(spec, s=shape[-spatial_dims:], dim=dims)
    frame_dims = tuple(range(-spatial_dims - 1, 0))
    return field / field.square().mean(dim=frame_dims, keepdim=True).sqrt().clamp_min(1e-12)


@dataclass(frozen=True)
class Background:
    """A drawn ensemble of initial contexts and its measured error.

    Attributes:
        contexts: ``(members, trajectories, k, channels, *space)``.
        member_rmse: ``(trajectories,)``, rms over members and the last context frame of
            member minus truth.
        mean_rmse: ``(trajectories,)``, rmse of the ensemble mean of the last context frame.
        spread: ``(trajectories,)``, rms over the frame of the members' standard deviation
            (unbiased) in the last context frame.
    """

    contexts: torch.Tensor
    member_rmse: torch.Tensor
    mean_rmse: torch.Tensor
    spread: torch.Tensor


def _errors(contexts: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    last, true = contexts[:, :, -1], truth[:, -1]  # (M, N, C, *space), (N, C, *space)
    frame_dims = tuple(range(1, true.ndim))  # (C, *space) of a (N, C, *space) tensor
    member = (last - true).square().mean(dim=tuple(d + 1 for d in frame_dims)).mean(0).sqrt()
    mean = (last.mean(0) - true).square().mean(dim=frame_dims).sqrt()
    if last.shape[0] > 1:
        spread = last.var(dim=0).mean(dim=frame_dims).sqrt()
    else:
        spread = torch.zeros_like(mean)
    return {"member_rmse": member, "mean_rmse": mean, "spread": spread}


def draw_background(
    initial: InitialCondition,
    frames: torch.Tensor,
    context_length: int,
    generator: torch.Generator,
    process: Process | None = None,
    pool: torch.Tensor | None = None,
) -> Background | None:
    """The members' initial contexts under ``initial``; None for ``exact``.

    Args:
        initial: the initial condition.
        frames: true frames ``(trajectories, lead + k, channels, *space)`` with
            ``lead = initial.lead``: ``background`` perturbs the first k and spins up
            ``lead`` frames, which ends on the true context ``frames[:, lead:lead + k]``.
        context_length: k.
        generator: the source of randomness (perturbations, the spin-up's noise, draws).
        process: ``background``: the process that spins the perturbed states up (normally
            the model under test).
        pool: ``climatology``: frames ``(trajectories', time, channels, *space)`` of
            unrelated trajectories to draw contexts from.

    Returns:
        A :class:`Background`, or None for ``exact``.
    """
    k, lead = context_length, initial.lead
    if frames.ndim < 4 or frames.shape[1] < lead + k:
        raise ValueError(
            f"frames must be (trajectories, {lead + k} = spin-up {lead} + context {k}, C, "
            f"*space); got {tuple(frames.shape)}"
        )
    truth = frames[:, lead : lead + k]
    if initial.kind == "exact":
        return None
    members, n = initial.members, frames.shape[0]
    frame_shape = tuple(frames.shape[2:])
    if initial.kind == "climatology":
        if pool is None or pool.ndim != frames.ndim or tuple(pool.shape[2:]) != frame_shape:
            raise ValueError(
                f"the climatology start needs a pool of frames (trajectories, time, "
                f"{', '.join(map(str, frame_shape))}) of unrelated trajectories"
            )
        if pool.shape[1] < k:
            raise ValueError(f"pool trajectories have {pool.shape[1]} frames, fewer than k={k}")
        which = torch.randint(pool.shape[0], (members * n,), generator=generator)
        when = torch.randint(pool.shape[1] - k + 1, (members * n,), generator=generator)
        index = when[:, None] + torch.arange(k)[None, :]
        contexts = pool[which[:, None], index].to(frames)
        contexts = contexts.reshape(members, n, k, *frame_shape)
    else:
        if process is None:
            raise ValueError("the background start needs the process that spins it up")
        start = frames[:, :k].unsqueeze(0).expand(members, n, k, *frame_shape)
        spatial = len(frame_shape) - 1
        bump = smooth_perturbation(
            (members + 1, n, *frame_shape), spatial, initial.wavenumbers, generator
        ).to(frames)
        bump = bump[:1] + bump[1:]  # common offset of the trajectory + each member's own
        perturbed = start + initial.error * bump.unsqueeze(2)
        perturbed = perturbed.reshape(members * n, k, *frame_shape)
        with torch.inference_mode():
            new = rollout(process, perturbed, lead, generator) if lead > 0 else perturbed[:, :0]
        window = torch.cat([perturbed, new.to(perturbed)], dim=1)[:, -k:]
        contexts = window.reshape(members, n, k, *frame_shape).clone()
    return Background(contexts=contexts, **_errors(contexts, truth))
