"""The assimilation problem, how it is built, and the view of it a strategy may read.

A :class:`Problem` holds the truth (for scoring), the context and an
:class:`~ardm_infer.observe.ObservationModel` (the observation operator H, the observations
and the noise: the one likelihood every strategy uses).  A strategy never sees the problem
itself: :func:`~ardm_infer.strategies.assimilate` hands each ``init`` / ``step`` a
:class:`ProblemView` that holds the context and the observations up to frame t + the
strategy's declared look-ahead, and raises :class:`StrategyContractError` for anything else
(docs/design.md §3: data in, ensemble out, inference causal up to a declared look-ahead).

Shapes: truth and lifted observations ``(trajectories, horizon, channels, *space)``,
context ``(trajectories, k, channels, *space)``, vector observations of a linear H
``(trajectories, horizon, n_observations)``.
"""

from __future__ import annotations

import dataclasses
import operator as _operator
from dataclasses import dataclass

import torch

from ..initial import Background, InitialCondition, draw_background, parse_initial
from ..observe import (
    FrameObservation,
    Full,
    LinearOperator,
    ObservationModel,
    Regime,
    add_noise,
    parse_regime,
)

__all__ = ["Problem", "ProblemView", "StrategyContractError", "make_problem"]


class StrategyContractError(RuntimeError):
    """A strategy asked for something the contract hides from it: the truth, the whole
    observation array, or the observation of a frame past its declared look-ahead."""


@dataclass(frozen=True)
class Problem:
    """One assimilation problem: truth, context and the observation model of one regime.

    Build it with :func:`make_problem`, or from lifted mask observations
    (``observation``, ``mask``, ``sigma``), or from an ``observation_model`` (any H); the
    other fields are then derived from the model.  ``observation`` / ``mask`` / ``sigma``
    given beside a model (e.g. by ``dataclasses.replace``) replace the model's.

    Attributes:
        truth: ``(trajectories, horizon, channels, *space)``, the frames to estimate
            (scoring only: strategies cannot read it).
        context: ``(trajectories, k, channels, *space)``, the given initial frames.
        observation: lifted ``(trajectories, horizon, channels, *space)`` (zeros where
            unobserved) for a mask, ``(trajectories, horizon, n_observations)`` for a linear
            H; frame index t = 0..horizon-1 is the (t+1)-th frame after the context.
        mask: bool, ``(horizon, channels, *space)`` or
            ``(trajectories, horizon, channels, *space)``; None for a linear H.
        sigma: observation noise std (same units as the state).
        regime: the regime that produced the observations, if any.
        observation_model: the :class:`~ardm_infer.observe.ObservationModel` strategies read.
        background: the members' initial contexts and their measured error
            (:class:`~ardm_infer.initial.Background`, contexts
            ``(members', trajectories, k, channels, *space)``) when the start is uncertain
            (``background`` / ``climatology``); ``context`` is then their mean.  None: every
            member starts from ``context`` (the ``exact`` start).
        initial: the initial condition's spec (:mod:`ardm_infer.initial`), for the record.
    """

    truth: torch.Tensor
    context: torch.Tensor
    observation: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    sigma: float | None = None
    regime: Regime | None = None
    observation_model: ObservationModel | None = None
    background: Background | None = None
    initial: str = "exact"

    def __post_init__(self) -> None:
        for name in ("truth", "context"):
            object.__setattr__(self, name, _frames(getattr(self, name), name))
        model = self.observation_model
        if model is None:
            missing = [n for n in ("observation", "mask", "sigma") if getattr(self, n) is None]
            if missing:
                raise ValueError(
                    f"Problem needs observation, mask and sigma (missing {', '.join(missing)}) "
                    "or an observation_model"
                )
            model = ObservationModel(self.observation, self.sigma, mask=self.mask)
            object.__setattr__(self, "observation_model", model)
        else:
            if not isinstance(model, ObservationModel):
                raise TypeError(
                    f"observation_model must be an ObservationModel, got {type(model).__name__}"
                )
            # Fields given beside the model (e.g. by dataclasses.replace) override it.
            observation = model.observation if self.observation is None else self.observation
            mask = model.mask if self.mask is None else self.mask
            sigma = model.sigma if self.sigma is None else self.sigma
            if (
                observation is not model.observation
                or mask is not model.mask
                or (sigma != model.sigma)
            ):
                if model.is_mask:
                    model = ObservationModel(observation, sigma, mask=mask)
                elif mask is not None:
                    raise ValueError("a problem observed through a linear H has no mask")
                else:
                    model = dataclasses.replace(model, observation=observation, sigma=sigma)
                object.__setattr__(self, "observation_model", model)
            object.__setattr__(self, "observation", model.observation)
            object.__setattr__(self, "mask", model.mask)
            object.__setattr__(self, "sigma", model.sigma)
        n, h = self.truth.shape[:2]
        frame = tuple(self.truth.shape[2:])
        if self.context.shape[0] != n or tuple(self.context.shape[2:]) != frame:
            raise ValueError(
                f"context {tuple(self.context.shape)} does not match "
                f"truth {tuple(self.truth.shape)}"
            )
        if self.background is not None:
            contexts = self.background.contexts
            if not isinstance(self.background, Background):
                raise TypeError(f"background must be a Background, got {self.background!r}")
            if contexts.ndim != self.context.ndim + 1 or contexts.shape[1:] != self.context.shape:
                raise ValueError(
                    f"background contexts {tuple(contexts.shape)} must be (members, "
                    f"*context.shape) = (members, {', '.join(map(str, self.context.shape))})"
                )
        if model.is_mask:
            if self.observation.shape != self.truth.shape:
                raise ValueError("observation must have the truth's shape (lifted observations)")
            if tuple(self.mask.shape[-len(frame) - 1 :]) != (h, *frame):
                raise ValueError(f"mask must end in (horizon, *frame) = {(h, *frame)}")
        else:
            if tuple(self.observation.shape[:2]) != (n, h):
                raise ValueError(
                    f"observation must be (trajectories, horizon, n_observations) = "
                    f"({n}, {h}, ...); got {tuple(self.observation.shape)}"
                )
            if tuple(model.operator.frame_shape) != frame:
                raise ValueError(
                    f"the operator acts on frames {model.operator.frame_shape}, the truth has "
                    f"frames {frame}"
                )

    @property
    def trajectories(self) -> int:
        return self.truth.shape[0]

    @property
    def horizon(self) -> int:
        return self.truth.shape[1]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.truth.shape[2:])

    def to(self, dtype: torch.dtype) -> Problem:
        """The same problem with truth, context and observations in ``dtype``."""
        if all(x.dtype == dtype for x in (self.truth, self.context, self.observation)):
            if self.background is None or self.background.contexts.dtype == dtype:
                return self
        background = self.background
        if background is not None:
            background = dataclasses.replace(background, contexts=background.contexts.to(dtype))
        return Problem(
            truth=self.truth.to(dtype),
            context=self.context.to(dtype),
            regime=self.regime,
            observation_model=self.observation_model.to(dtype),
            background=background,
            initial=self.initial,
        )

    def mask_at(self, t: int) -> torch.Tensor:
        """Mask of frame t, ``(trajectories, channels, *space)`` (broadcast if shared)."""
        return self.observation_model.mask_at(t)

    def observed(self, t: int) -> bool:
        """Whether any point of frame t is observed."""
        return self.observation_model.observed(t)

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
    operator: LinearOperator | None = None,
    initial: str | InitialCondition = "exact",
    process: object | None = None,
    pool: torch.Tensor | None = None,
    initial_generator: torch.Generator | None = None,
) -> Problem:
    """Build a :class:`Problem` from true frames ``(trajectories, lead + k + horizon, C,
    *space)``.

    The first ``context_length`` frames (after ``lead``) are the context; the regime draws
    masks and noise for the rest from ``generator``.

    The initial condition (:mod:`ardm_infer.initial`; docs/protocol.md) says what the members
    start from: ``"exact"`` (default; ``lead`` = 0) the true context; ``"background(error=e,
    spinup=B)"`` the truth ``B`` frames earlier, perturbed and spun up by ``process``
    (``lead`` = B: the first B frames of ``frames`` precede the context); ``"climatology"``
    contexts drawn from ``pool`` (frames of unrelated trajectories).  The members' contexts
    are drawn from ``initial_generator`` (default: ``generator``, after the observations), so
    the observations of a seed do not depend on the initial condition.  With an ``operator`` H (e.g.
    :func:`~ardm_infer.observe.local_average_operator`) the observations are
    ``y_t = H x_t + sigma xi_t`` ``(trajectories, horizon, n_observations)`` on the frames the
    regime observes, with the regime's sigma; the regime's spatial pattern must then be
    ``full`` (H replaces it), e.g. ``"full, every=2, sigma=0.1"``.
    """
    frames = _frames(frames, "frames")
    if frames.dtype in (torch.float16, torch.bfloat16):
        frames = frames.float()  # observation noise is drawn at float32 precision at least
    k = _integer(context_length, "context_length", 1)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    start = parse_initial(initial)
    lead = start.lead
    if frames.shape[1] <= lead:
        raise ValueError(
            f"frames has {frames.shape[1]} frames along axis 1; the initial condition "
            f"{start.spec()} consumes the first {lead} (its spin-up) before the context"
        )
    before, frames = frames[:, : lead + k], frames[:, lead:]
    regime = parse_regime(regime, pde=pde)
    h = frames.shape[1] - k if horizon is None else _integer(horizon, "horizon", 1)
    if h < 1 or frames.shape[1] < k + h:
        raise ValueError(
            f"frames has {frames.shape[1]} frames along axis 1: need context_length={k} "
            f"plus a horizon >= 1{'' if horizon is None else f' (horizon={h})'}"
        )
    truth = frames[:, k : k + h]
    if operator is None:
        observation, mask = regime.observe(truth, generator)
        model = ObservationModel(observation, float(regime.sigma), mask=mask)
    else:
        model = _linear_observations(truth, regime, operator, generator)
    context = frames[:, :k]
    background = draw_background(
        start, before, k, initial_generator or generator, process=process, pool=pool
    )
    if background is not None:
        context = background.contexts.mean(dim=0)
    return Problem(
        truth=truth,
        context=context,
        regime=regime,
        observation_model=model,
        background=background,
        initial=start.spec(),
    )


def _frames(x: object, name: str) -> torch.Tensor:
    """Frames ``(trajectories, time, channels, *space)`` as a finite floating tensor (numpy
    arrays converted, integers to the default dtype); ``TypeError`` / ``ValueError`` naming
    ``name`` otherwise."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{name} must be a tensor or an array, got {type(x).__name__}"
            ) from None
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be real numbers, got {x.dtype}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if x.ndim < 4:
        raise ValueError(
            f"{name} must be (trajectories, time, channels, *space) with at least one spatial "
            f"axis; got shape {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        bad = ~torch.isfinite(x)
        where = torch.nonzero(bad.flatten(2).any(-1))[0].tolist()
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite values (first at trajectory {where[0]}, "
            f"frame {where[1]}); frames must be finite"
        )
    return x


def _integer(value: object, name: str, minimum: int) -> int:
    """``value`` as an int >= minimum; ``TypeError`` / ``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = _operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__})"
        ) from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _linear_observations(
    truth: torch.Tensor, regime: Regime, operator: LinearOperator, generator: torch.Generator
) -> ObservationModel:
    """``y_t = H x_t + sigma xi_t`` on the regime's observed frames (zeros elsewhere)."""
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
    if not isinstance(regime.spatial, Full):
        raise ValueError(
            f"with operator=..., H replaces the regime's spatial pattern, so the regime must "
            f"be 'full' (e.g. 'full, every={regime.every}, sigma={regime.sigma}'); got "
            f"{regime.spec()!r}"
        )
    horizon = truth.shape[1]
    regime.validate(truth.shape[2:], horizon)
    if tuple(operator.frame_shape) != tuple(truth.shape[2:]):
        raise ValueError(
            f"operator acts on frames {operator.frame_shape}, the frames are "
            f"{tuple(truth.shape[2:])}"
        )
    observed = regime.observed_frames(horizon, device=truth.device)
    noisy = add_noise(operator.apply(truth), regime.sigma, generator)
    observation = torch.where(observed.view(1, horizon, 1), noisy, 0.0)
    return ObservationModel(
        observation, float(regime.sigma), operator=operator, observed_frames=observed
    )


class ProblemView:
    """What a strategy may read while producing frame ``now``: never the truth, and the
    observations of frames ``<= now + lookahead`` only.

    Built by :func:`~ardm_infer.strategies.assimilate` for every ``init`` (``now = -1``) and
    ``step`` from the problem's context and observation model; it holds no reference to the
    truth.  Reads past the look-ahead raise :class:`StrategyContractError` naming the strategy.

    Attributes:
        context: ``(trajectories, k, channels, *space)``.
        background: the members' initial contexts of an uncertain start
            (:class:`~ardm_infer.initial.Background`, contexts ``(members', trajectories, k,
            channels, *space)``), or None (every member starts from ``context``).
        sigma: observation noise std.
        now: the frame being produced (-1 in ``init``).
        lookahead: frames of future observations the strategy declared.
    """

    __slots__ = ("_model", "_strategy", "background", "context", "lookahead", "now")

    def __init__(
        self,
        context: torch.Tensor,
        observation_model: ObservationModel,
        now: int,
        lookahead: int,
        strategy: str,
        background: Background | None = None,
    ) -> None:
        self.context = context
        self.background = background
        self._model = observation_model
        self.now = now
        self.lookahead = lookahead
        self._strategy = strategy

    @classmethod
    def of(cls, problem: Problem, now: int, lookahead: int, strategy: str) -> ProblemView:
        """The view of ``problem`` at frame ``now`` for a strategy with ``lookahead``."""
        return cls(
            problem.context, problem.observation_model, now, lookahead, strategy, problem.background
        )

    # ------------------------------------------------------------------ what it is

    @property
    def latest(self) -> int:
        """The last frame whose observation may be read, ``now + lookahead``."""
        return self.now + self.lookahead

    @property
    def trajectories(self) -> int:
        return self.context.shape[0]

    @property
    def horizon(self) -> int:
        return self._model.horizon

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.context.shape[2:])

    @property
    def sigma(self) -> float:
        return self._model.sigma

    @property
    def is_mask(self) -> bool:
        """Whether H is a mask (observations lifted to the grid)."""
        return self._model.is_mask

    @property
    def operator(self) -> LinearOperator | None:
        """The linear H (None for a mask)."""
        return self._model.operator

    def _check(self, t: int, what: str) -> None:
        if not 0 <= t < self.horizon:
            raise IndexError(f"frame {t} is outside the horizon 0..{self.horizon - 1}")
        if t > self.latest:
            raise StrategyContractError(
                f"strategy {self._strategy!r} read the {what} of frame {t} while producing "
                f"frame {self.now}, but declares lookahead(config) = {self.lookahead}: it may "
                f"read frames <= {self.latest}; declare the look-ahead it needs"
            )

    # ------------------------------------------------------------------ observations

    def observed(self, t: int) -> bool:
        """Whether any point of frame t is observed (t <= latest)."""
        self._check(t, "observation pattern")
        return self._model.observed(t)

    def mask_at(self, t: int) -> torch.Tensor:
        """Mask of frame t, ``(trajectories, channels, *space)`` (mask observations only)."""
        self._check(t, "mask")
        return self._model.mask_at(t)

    def observation_at(self, t: int) -> torch.Tensor:
        """Observation of frame t: lifted ``(trajectories, channels, *space)`` for a mask,
        ``(trajectories, n_observations)`` for a linear H."""
        self._check(t, "observation")
        return self._model.observation[:, t]

    def frame(self, t: int) -> FrameObservation | None:
        """Frame t's :class:`~ardm_infer.observe.FrameObservation` (its likelihood), or None
        if nothing is observed at t."""
        self._check(t, "observation")
        return self._model.frame(t)

    def window(self, start: int, stop: int) -> ObservationModel:
        """The observation model of frames ``start .. min(stop, horizon) - 1``."""
        last = min(stop, self.horizon) - 1
        if last >= start:
            self._check(start, "observation")
            self._check(last, "observation")
        return self._model.window(start, stop)

    # ------------------------------------------------------------------ what it hides

    @property
    def truth(self) -> torch.Tensor:
        raise StrategyContractError(
            f"strategy {self._strategy!r} asked for the truth: strategies never see it"
        )

    def _whole(self, name: str) -> StrategyContractError:
        return StrategyContractError(
            f"strategy {self._strategy!r} asked for the whole {name} array; read frame by "
            f"frame with observation_at(t), mask_at(t), frame(t) or window(start, stop) "
            f"(frames <= now + lookahead)"
        )

    @property
    def observation(self) -> torch.Tensor:
        raise self._whole("observation")

    @property
    def mask(self) -> torch.Tensor:
        raise self._whole("mask")

    @property
    def observation_model(self) -> ObservationModel:
        raise self._whole("observation model")

    def __repr__(self) -> str:
        return (
            f"ProblemView(strategy={self._strategy!r}, now={self.now}, "
            f"lookahead={self.lookahead}, trajectories={self.trajectories}, "
            f"horizon={self.horizon}, frame_shape={self.frame_shape}, {self._model.kind})"
        )
