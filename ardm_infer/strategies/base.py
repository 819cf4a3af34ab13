"""The strategy interface, the problem container, the registry and the one-call driver.

A strategy is data in, ensemble out (docs/design.md §3): a frozen ``Config`` dataclass, an
explicit :class:`StrategyState` passed from frame to frame (never hidden in the object), and
a :class:`StrategyResult` with the ensemble trajectory, optional log-weights and the cost.

Shapes: an ensemble trajectory is ``(members, trajectories, time, channels, *space)``;
within a step the ensemble is ``(members, trajectories, channels, *space)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from ..observe import Regime, parse_regime
from ..process import Process


@dataclass(frozen=True)
class Problem:
    """One assimilation problem: truth, context and the observations of one regime.

    Attributes:
        truth: ``(trajectories, horizon, channels, *space)``, the frames to estimate
            (scoring only: strategies never read it).
        context: ``(trajectories, k, channels, *space)``, the given initial frames.
        observation: ``(trajectories, horizon, channels, *space)``, lifted (zeros where
            unobserved); frame index t = 0..horizon-1 is the (t+1)-th frame after the context.
        mask: bool, ``(horizon, channels, *space)`` or
            ``(trajectories, horizon, channels, *space)``.
        sigma: observation noise std (same units as the state).
        regime: the regime that produced the observations, if any.
    """

    truth: torch.Tensor
    context: torch.Tensor
    observation: torch.Tensor
    mask: torch.Tensor
    sigma: float
    regime: Regime | None = None

    def __post_init__(self) -> None:
        n, h = self.truth.shape[:2]
        frame = tuple(self.truth.shape[2:])
        if self.context.shape[0] != n or tuple(self.context.shape[2:]) != frame:
            raise ValueError(
                f"context {tuple(self.context.shape)} does not match "
                f"truth {tuple(self.truth.shape)}"
            )
        if self.observation.shape != self.truth.shape:
            raise ValueError("observation must have the truth's shape (lifted observations)")
        if tuple(self.mask.shape[-len(frame) - 1 :]) != (h, *frame):
            raise ValueError(f"mask must end in (horizon, *frame) = {(h, *frame)}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")

    @property
    def trajectories(self) -> int:
        return self.truth.shape[0]

    @property
    def horizon(self) -> int:
        return self.truth.shape[1]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.truth.shape[2:])

    def mask_at(self, t: int) -> torch.Tensor:
        """Mask of frame t, ``(trajectories, channels, *space)`` (broadcast if shared)."""
        m = self.mask[..., t, *([slice(None)] * len(self.frame_shape))]
        return m.expand(self.trajectories, *self.frame_shape)

    def observed(self, t: int) -> bool:
        """Whether any point of frame t is observed."""
        return bool(self.mask_at(t).any())

    def with_sigma(self, sigma: float) -> Problem:
        """The same observations scored with another noise level (e.g. sigma -> infinity)."""
        return dataclasses.replace(self, sigma=sigma)


def make_problem(
    frames: torch.Tensor,
    context_length: int,
    regime: Regime | str,
    generator: torch.Generator,
    horizon: int | None = None,
    pde: str | None = None,
) -> Problem:
    """Build a :class:`Problem` from true frames ``(trajectories, k + horizon, C, *space)``.

    The first ``context_length`` frames are the context; the regime draws masks and noise
    for the rest from ``generator``.
    """
    regime = parse_regime(regime, pde=pde) if isinstance(regime, str) else regime
    k = context_length
    h = frames.shape[1] - k if horizon is None else horizon
    if h < 1 or frames.shape[1] < k + h:
        raise ValueError(f"need {k} context frames plus a horizon >= 1; got {frames.shape[1]}")
    truth = frames[:, k : k + h]
    observation, mask = regime.observe(truth, generator)
    return Problem(
        truth=truth,
        context=frames[:, :k],
        observation=observation,
        mask=mask,
        sigma=float(regime.sigma),
        regime=regime,
    )


@dataclass
class Cost:
    """What a run cost.

    Attributes:
        wall_seconds: wall time of the run.
        denoiser_calls: network evaluations counted per batch element (0 for solvers).
        vjps: vector-Jacobian products through the denoiser, per batch element.
        peak_memory_bytes: peak memory: CUDA max allocated on GPU, else the process's peak
            resident set size (a high-water mark over the whole process, not just this run).
        frames: physical frames assimilated.
    """

    wall_seconds: float = 0.0
    denoiser_calls: int = 0
    vjps: int = 0
    peak_memory_bytes: int = 0
    frames: int = 0

    @property
    def ms_per_frame(self) -> float:
        return 1000 * self.wall_seconds / max(self.frames, 1)


@dataclass
class StrategyState:
    """The state a strategy passes from frame to frame.

    Attributes:
        window: last k frames of every member, ``(members, trajectories, k, C, *space)``.
        frames: emitted frames so far, each ``(members, trajectories, C, *space)``.
        log_weights: normalised log-weights ``(members, trajectories)`` or None (equal).
        diagnostics: per-strategy records (lists per frame, counters).
        vjps: VJPs spent so far (per batch element).
        extra: strategy-specific carry (e.g. warm-start controls).
    """

    window: torch.Tensor
    frames: list[torch.Tensor] = field(default_factory=list)
    log_weights: torch.Tensor | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    vjps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def push(self, frame: torch.Tensor) -> None:
        """Append ``frame`` ``(members, trajectories, C, *space)`` and slide the window."""
        self.frames.append(frame)
        self.window = torch.cat([self.window[:, :, 1:], frame.unsqueeze(2)], dim=2)


@dataclass
class StrategyResult:
    """Output of :func:`assimilate`.

    Attributes:
        strategy: registry name.
        config: the Config used.
        ensemble: ``(members, trajectories, horizon, C, *space)``.
        log_weights: ``(members, trajectories)`` normalised final log-weights, or None.
        cost: :class:`Cost`.
        diagnostics: strategy-specific records (ESS, resampling count, log-evidence, KL...).
    """

    strategy: str
    config: Any
    ensemble: torch.Tensor
    log_weights: torch.Tensor | None
    cost: Cost
    diagnostics: dict[str, Any]


@runtime_checkable
class Strategy(Protocol):
    """What every registered strategy provides."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def init(
        self,
        process: Process,
        problem: Problem,
        members: int,
        config: Any,
        generator: torch.Generator,
    ) -> StrategyState:
        """Initial state; the window holds the context repeated over members."""
        ...

    def step(
        self,
        process: Process,
        problem: Problem,
        state: StrategyState,
        t: int,
        config: Any,
        generator: torch.Generator,
    ) -> StrategyState:
        """Produce frame t (0-based in the horizon), assimilating its observation if any."""
        ...


_REGISTRY: dict[str, Strategy] = {}


def register(cls: type) -> type:
    """Class decorator: register a strategy under ``cls.name`` (an instance is stored)."""
    name = cls.name
    if name in _REGISTRY:
        raise ValueError(f"a strategy named {name!r} is already registered")
    if not (dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen):
        raise TypeError(f"{cls.__name__}.Config must be a frozen dataclass")
    _REGISTRY[name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a strategy from the registry (tests and tutorials)."""
    _REGISTRY.pop(name, None)


def available_strategies() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; a clear error suggests close names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=2)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown strategy {name!r}{hint} registered: {', '.join(available_strategies())}"
        ) from None


def require_guided_ardm(process: Process, who: str, why: str) -> None:
    """The check shared by strategies that steer sub-steps (dps, vc, controller).

    Raises ``ValueError`` (``who`` + ``why``) for a process without denoising sub-steps and
    :class:`~ardm_infer.ardm.DeterministicSamplerError` for an eta = 0 sampler.
    """
    if not hasattr(process, "step_frame"):
        raise ValueError(f"{who} {why}: it needs an ARDM process")
    process.schedule.require_stochastic(who)


def initial_window(problem: Problem, members: int, k: int) -> torch.Tensor:
    """Context repeated over members, ``(members, trajectories, k, C, *space)``."""
    ctx = problem.context
    if ctx.shape[1] < k:
        raise ValueError(f"the process needs {k} context frames, the problem has {ctx.shape[1]}")
    return ctx[:, -k:].unsqueeze(0).expand(members, *ctx[:, -k:].shape).clone()


def tile_members(x: torch.Tensor, members: int) -> torch.Tensor:
    """Per-trajectory data for the flattened sampler batch: ``(N, ...)`` -> ``(M*N, ...)``
    (members first, as :func:`flat` orders the batch)."""
    return flat(x.unsqueeze(0).expand(members, *x.shape))


def flat(x: torch.Tensor) -> torch.Tensor:
    """Merge members and trajectories: ``(M, N, ...)`` -> ``(M*N, ...)``."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unflat(x: torch.Tensor, members: int) -> torch.Tensor:
    """Inverse of :func:`flat`: ``(M*N, ...)`` -> ``(M, N, ...)``."""
    return x.reshape(members, x.shape[0] // members, *x.shape[1:])


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb * 1024)


def assimilate(
    process: Process,
    problem: Problem,
    strategy: str | Strategy = "forecast",
    members: int = 16,
    generator: torch.Generator | None = None,
    config: Any = None,
    progress: bool = False,
    **overrides: Any,
) -> StrategyResult:
    """Run one strategy on one problem.

    Args:
        process: an ARDM or a numerical process (``forecast``, ``smc``, ``enkf`` accept both).
        problem: the :class:`Problem`; never modified.
        strategy: a registered name or a strategy object.
        members: ensemble size (particles for ``smc``).
        generator: the only source of randomness (required).
        config: the strategy's ``Config``; if None it is built from ``overrides``.
        progress: show a progress bar over frames.

    Returns:
        :class:`StrategyResult` with the ensemble ``(members, trajectories, horizon, C, *space)``.
    """
    if generator is None:
        raise ValueError("pass a torch.Generator: strategies never use the global RNG")
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    if config is None:
        config = strat.Config(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    if not isinstance(config, strat.Config):
        raise TypeError(f"config must be a {strat.name}.Config, got {type(config).__name__}")
    if tuple(problem.frame_shape) != tuple(process.frame_shape):
        raise ValueError(
            f"problem frames {problem.frame_shape} do not match the process {process.frame_shape}"
        )
    device = problem.context.device
    calls0 = getattr(process, "denoiser_calls", 0)
    t0 = time.perf_counter()
    state = strat.init(process, problem, members, config, generator)
    for t in tqdm(
        range(problem.horizon),
        desc=strat.name,
        disable=not progress,
        file=sys.stderr,
        leave=False,
    ):
        state = strat.step(process, problem, state, t, config, generator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    ensemble = torch.stack(state.frames, dim=2)
    cost = Cost(
        wall_seconds=wall,
        denoiser_calls=getattr(process, "denoiser_calls", 0) - calls0,
        vjps=state.vjps,
        peak_memory_bytes=_peak_memory(device),
        frames=problem.horizon,
    )
    return StrategyResult(
        strategy=strat.name,
        config=config,
        ensemble=ensemble.detach(),
        log_weights=state.log_weights,
        cost=cost,
        diagnostics=state.diagnostics,
    )


@dataclass
class Propagation:
    """One physical step of every member.

    Attributes:
        frame: ``(members, trajectories, C, *space)``.
        kl: ``(members, trajectories)`` control energy of the step (None for solvers).
        log_ratio: ``(members, trajectories)`` log q_u - log p of the path (None for solvers).
    """

    frame: torch.Tensor
    kl: torch.Tensor | None = None
    log_ratio: torch.Tensor | None = None


def propagate(
    process: Process,
    window: torch.Tensor,
    generator: torch.Generator,
    guidance: Any = None,
    frame: int = 0,
) -> Propagation:
    """Advance every member one frame from ``window`` ``(members, trajectories, k, C, *space)``.

    ARDMs (anything with ``step_frame``) run their guided sampler and report KL and
    log-ratio; numerical processes run ``step`` and accept no guidance.
    """
    members = window.shape[0]
    k = process.context_length
    ctx = flat(window[:, :, -k:])
    if hasattr(process, "step_frame"):
        res = process.step_frame(ctx, generator, guidance=guidance, frame=frame)
        return Propagation(
            frame=unflat(res.frame, members),
            kl=unflat(res.kl, members),
            log_ratio=unflat(res.log_ratio, members),
        )
    if guidance is not None:
        raise ValueError(f"{type(process).__name__} is a numerical process: guidance needs an ARDM")
    return Propagation(frame=unflat(process.step(ctx, generator), members))
