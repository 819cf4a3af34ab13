"""The strategy interface, the registry and the one-call driver.

A strategy is data in, ensemble out (docs/design.md §3): a frozen ``Config`` dataclass, an
immutable :class:`~ardm_infer.strategies.state.StrategyState` passed from frame to frame
(never hidden in the object), and a :class:`~ardm_infer.strategies.state.StrategyResult`
with the ensemble trajectory, optional log-weights and the cost.  The contract is enforced
by :func:`assimilate`: ``init`` and ``step`` receive a
:class:`~ardm_infer.strategies.problem.ProblemView` (no truth; observations only up to
t + the look-ahead the strategy declares with ``lookahead(config)``) and must return a new
state holding exactly one more frame.

Shapes: an ensemble trajectory is ``(members, trajectories, time, channels, *space)``;
within a step the ensemble is ``(members, trajectories, channels, *space)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from ..ardm.process import count_denoiser_calls
from ..process import GuidedProcess, Process
from .config import config_fields, document_config
from .problem import Problem, ProblemView, StrategyContractError, make_problem
from .state import Cost, StrategyResult, StrategyState

__all__ = [
    "Cost",
    "DivergenceError",
    "Problem",
    "ProblemView",
    "Propagation",
    "Strategy",
    "StrategyContractError",
    "StrategyResult",
    "StrategyState",
    "assimilate",
    "available_strategies",
    "config_fields",
    "flat",
    "get_strategy",
    "initial_window",
    "make_problem",
    "propagate",
    "register",
    "require_guided_ardm",
    "tile_members",
    "unflat",
    "unregister",
]


class DivergenceError(RuntimeError):
    """A strategy's ensemble went non-finite (or its weights collapsed): the run stops here.

    Attributes:
        strategy: the registry name.
        frame: the frame index t (0-based in the horizon).
        trajectories: the trajectories whose ensemble (or weights) failed.
    """

    def __init__(self, message: str, strategy: str, frame: int, trajectories: list[int]):
        super().__init__(message)
        self.strategy = strategy
        self.frame = frame
        self.trajectories = trajectories


@runtime_checkable
class Strategy(Protocol):
    """What every registered strategy provides."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def lookahead(self, config: Any) -> int:
        """Frames of future observations ``step`` reads: at frame t it may read the
        observations of frames <= t + lookahead (0 for a filter)."""
        ...

    def init(
        self,
        process: Process,
        problem: ProblemView,
        members: int,
        config: Any,
        generator: torch.Generator,
    ) -> StrategyState:
        """Initial state; the window holds the context repeated over members."""
        ...

    def step(
        self,
        process: Process,
        problem: ProblemView,
        state: StrategyState,
        t: int,
        config: Any,
        generator: torch.Generator,
    ) -> StrategyState:
        """Produce frame t (0-based in the horizon), assimilating its observation if any;
        returns a new state with that frame pushed (``state`` is left untouched)."""
        ...


_REGISTRY: dict[str, Strategy] = {}


def register(cls: type) -> type:
    """Class decorator: register a strategy under ``cls.name`` (an instance is stored)."""
    name = cls.name
    if name in _REGISTRY:
        raise ValueError(f"a strategy named {name!r} is already registered")
    if not (dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen):
        raise TypeError(f"{cls.__name__}.Config must be a frozen dataclass")
    if not callable(getattr(cls, "lookahead", None)):
        raise TypeError(
            f"{cls.__name__} must declare lookahead(self, config) -> int: the frames of future "
            "observations its step reads (0 for a filter)"
        )
    document_config(cls.Config)
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
    if not isinstance(process, GuidedProcess):
        raise ValueError(f"{who} {why}: it needs an ARDM process")
    process.schedule.require_stochastic(who)


def require_mask_observations(problem: ProblemView, who: str, why: str) -> None:
    """The check shared by strategies that need H to be a mask (lifted observations).

    Raises ``ValueError`` naming ``who`` and ``why`` for a general linear H.
    """
    if not problem.is_mask:
        raise ValueError(
            f"{who} {why}, so it needs a mask observation operator; this problem observes "
            f"through {problem.operator!r}"
        )


def initial_window(problem: Problem | ProblemView, members: int, k: int) -> torch.Tensor:
    """The members' first window, ``(members, trajectories, k, C, *space)``: the first
    ``members`` contexts of the problem's background (an uncertain start), else the context
    repeated over members (the exact start)."""
    ctx = problem.context
    if ctx.shape[1] < k:
        raise ValueError(f"the process needs {k} context frames, the problem has {ctx.shape[1]}")
    background = problem.background
    if background is not None:
        contexts = background.contexts
        if contexts.shape[0] < members:
            raise ValueError(
                f"the problem's initial background holds {contexts.shape[0]} members, fewer "
                f"than members={members}; build it with initial='background(members="
                f"{members})' (or climatology(members=...))"
            )
        return contexts[:members, :, -k:].clone()
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

    The strategy sees the problem only through a :class:`ProblemView` per frame (no truth,
    observations up to t + ``strategy.lookahead(config)``); every ``step`` must return a new
    state with one more frame.

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
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(members, bool) or not isinstance(members, int):
        raise TypeError(f"members must be an integer, got {members!r} ({type(members).__name__})")
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a Problem (make_problem), got {type(problem).__name__}")
    if not isinstance(process, Process):
        raise TypeError(
            f"process must be a Process (an ARDM or a numerical process), got "
            f"{type(process).__name__}"
        )
    if not isinstance(strategy, str) and not isinstance(strategy, Strategy):
        raise TypeError(
            f"strategy must be a registered name or a strategy object, got "
            f"{type(strategy).__name__}"
        )
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
    lookahead = _declared_lookahead(strat, config)
    problem = problem.to(_process_dtype(process, problem))
    device = problem.context.device
    t0 = time.perf_counter()
    with count_denoiser_calls() as counter:
        state = strat.init(
            process, ProblemView.of(problem, -1, lookahead, strat.name), members, config, generator
        )
        _check_state(strat, state, 0)
        for t in tqdm(
            range(problem.horizon),
            desc=strat.name,
            disable=not progress,
            file=sys.stderr,
            leave=False,
        ):
            view = ProblemView.of(problem, t, lookahead, strat.name)
            state = strat.step(process, view, state, t, config, generator)
            _check_state(strat, state, t + 1)
            _check_finite(strat, state.frames[-1], t)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    ensemble = torch.stack(state.frames, dim=2)
    cost = Cost(
        wall_seconds=wall,
        denoiser_calls=counter.calls,
        vjps=state.vjps,
        peak_memory_bytes=_peak_memory(device),
        frames=problem.horizon,
    )
    diagnostics = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in state.diagnostics.items()
    }
    return StrategyResult(
        strategy=strat.name,
        config=config,
        ensemble=ensemble.detach(),
        log_weights=state.log_weights,
        cost=cost,
        diagnostics=diagnostics,
    )


def _declared_lookahead(strategy: Strategy, config: Any) -> int:
    lookahead = strategy.lookahead(config)
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 0:
        raise TypeError(
            f"{strategy.name}.lookahead(config) must return an int >= 0, got {lookahead!r}"
        )
    return lookahead


def _process_dtype(process: Process, problem: Problem) -> torch.dtype:
    """The floating dtype a run computes in: the process's, if it declares one (a learned
    ARDM's parameters), else the problem's, with 16-bit floats raised to float32."""
    dtype = getattr(process, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    dtype = problem.context.dtype
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


_DIVERGENCE_HINT = (
    "check the inputs (context and observations in the process's normalised units, sigma) "
    "and the strategy's options"
)


def _check_finite(strategy: Strategy, frame: torch.Tensor, t: int) -> None:
    """Stop a run whose ensemble frame ``(members, trajectories, C, *space)`` is non-finite."""
    finite = torch.isfinite(frame).flatten(2).all(-1)  # (members, trajectories)
    if bool(finite.all()):
        return
    failed = ~finite
    which = torch.nonzero(failed.any(0)).flatten().tolist()
    hint = getattr(strategy, "divergence_hint", _DIVERGENCE_HINT)
    raise DivergenceError(
        f"{strategy.name}: the ensemble became non-finite at frame t={t} for trajectories "
        f"{which} ({int(failed.sum())} of {failed.numel()} member-trajectories); {hint}",
        strategy.name,
        t,
        which,
    )


def _check_state(strategy: Strategy, state: Any, frames: int) -> None:
    """``init`` returns a state with no frame, ``step`` one with exactly one more."""
    if not isinstance(state, StrategyState):
        raise TypeError(
            f"{strategy.name}: init and step must return a StrategyState, got "
            f"{type(state).__name__}"
        )
    if len(state.frames) != frames:
        raise RuntimeError(
            f"{strategy.name}: after frame {frames - 1} the state holds {len(state.frames)} "
            f"frames, expected {frames}; states are immutable, so step must return the new "
            "state (return state.push(frame))"
        )


@dataclass(frozen=True)
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

    A :class:`~ardm_infer.process.GuidedProcess` (the ARDM) runs its guided sampler and
    reports KL and log-ratio; numerical processes run ``step`` and accept no guidance.
    """
    members = window.shape[0]
    k = process.context_length
    ctx = flat(window[:, :, -k:])
    if isinstance(process, GuidedProcess):
        res = process.step_frame(ctx, generator, guidance=guidance, frame=frame)
        return Propagation(
            frame=unflat(res.frame, members),
            kl=unflat(res.kl, members),
            log_ratio=unflat(res.log_ratio, members),
        )
    if guidance is not None:
        raise ValueError(f"{type(process).__name__} is a numerical process: guidance needs an ARDM")
    return Propagation(frame=unflat(process.step(ctx, generator), members))
