"""The one Gaussian observation log-likelihood shared by every strategy.

Observation model (docs/design.md §2): ``y = H x + sigma * xi`` with ``xi ~ N(0, I)``.  For a
mask operator ``H = M`` with the observation lifted to the full grid,

    log p(y | x) = sum_{i : M_i} log N(y_i; x_i, sigma^2)
                 = -|M (y - x)|^2 / (2 sigma^2) - (n_obs / 2) log(2 pi sigma^2),

where ``n_obs = sum_i M_i`` counts the observed entries of one frame (or window).  The
first term is the observation cost ``l(y, x)`` of docs/design.md §2 (:func:`observation_cost`);
the second is the Gaussian normalising constant, independent of ``x``.  Gradient:

    grad_x log p(y | x) = -grad_x l(y, x) = M (y - x) / sigma^2,

which is what DPS back-propagates through the Tweedie estimate (Chung et al. 2023).

The log-likelihood is built from ``pyro.distributions.Normal(state, sigma).mask(mask)``
with the frame dimensions declared as the event (``to_event``), so it is a genuine Pyro
distribution and composes with Pyro models (e.g. the SMC cross-check against
``pyro.infer.SMCFilter``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any

import pyro.distributions as pyro_distributions
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin

from .operators import LinearOperator

__all__ = [
    "FrameObservation",
    "ObservationModel",
    "log_likelihood",
    "log_likelihood_linear",
    "observation_cost",
    "observation_cost_linear",
    "observation_distribution",
]


def _frame_ndim(mask: torch.Tensor, frame_ndim: int | None) -> int:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError("mask must be a boolean torch.Tensor")
    ndim = mask.ndim if frame_ndim is None else int(frame_ndim)
    if ndim < 0:
        raise ValueError(f"frame_ndim must be non-negative; got {ndim}")
    return ndim


def observation_distribution(
    state: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    frame_ndim: int | None = None,
) -> TorchDistributionMixin:
    """The Pyro distribution of a lifted observation given the state.

    ``Normal(state, sigma).mask(mask).to_event(frame_ndim)``: independent Gaussians on the
    grid, with unobserved entries contributing exactly 0 to ``log_prob``.

    Args:
        state: ``(..., channels, *space)``.
        mask: boolean, broadcastable to ``state``; e.g. ``(channels, *space)``.
        sigma: noise standard deviation (float, or tensor broadcastable to ``state``).
        frame_ndim: number of trailing dims forming one event (summed over);
            default ``mask.ndim``.

    Returns:
        A distribution with ``event_shape`` the trailing ``frame_ndim`` dims.
    """
    ndim = _frame_ndim(mask, frame_ndim)
    mask = mask.to(state.device)
    # No argument validation: a diverged (non-finite) state gives a NaN log-likelihood that the
    # run's per-frame check reports with the frame and a hint, not a distribution error.
    normal = pyro_distributions.Normal(state, sigma, validate_args=False)
    return normal.mask(mask).to_event(ndim)


def log_likelihood(
    observation: torch.Tensor,
    state: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    frame_ndim: int | None = None,
) -> torch.Tensor:
    """``log p(y | x) = sum_{observed i} log N(y_i; x_i, sigma^2)`` for lifted observations.

    Values of ``observation`` where ``mask`` is False are ignored (they may be zeros or
    even NaN).  Differentiable with respect to ``state``; the gradient is
    ``M (y - x) / sigma^2``.

    Args:
        observation: lifted observation ``(..., channels, *space)`` (zeros where
            unobserved), broadcastable with ``state``.
        state: ``(..., channels, *space)``, e.g. ``(members, channels, *space)`` for one frame
            or ``(members, time, channels, *space)`` for a window.
        mask: boolean observation mask, broadcastable to ``state``.
        sigma: observation-noise standard deviation (float, or tensor broadcastable to
            ``state``, e.g. per channel).
        frame_ndim: number of trailing dims summed over; default ``mask.ndim``.  With a
            frame mask ``(channels, *space)`` this sums over the frame and returns the
            leading shape; with a window mask ``(time, channels, *space)`` it also sums over
            time; pass ``frame_ndim=mask.ndim - 1`` to keep one term per frame.

    Returns:
        ``state.shape[:-frame_ndim]`` (broadcast with the observation's leading shape).
    """
    ndim = _frame_ndim(mask, frame_ndim)
    mask = mask.to(state.device)
    observation = torch.where(
        mask, observation.to(state.device), torch.zeros((), dtype=state.dtype, device=state.device)
    )
    return observation_distribution(state, mask, sigma, frame_ndim=ndim).log_prob(observation)


def observation_cost(
    observation: torch.Tensor,
    state: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    frame_ndim: int | None = None,
) -> torch.Tensor:
    """The observation cost ``l(y, x) = |M (y - x)|^2 / (2 sigma^2)`` (docs/design.md §2).

    ``l(y, x) = -log p(y | x) - (n_obs / 2) log(2 pi sigma^2)`` with
    ``n_obs = sum(M)`` over the summed dims; see :func:`log_likelihood` for the arguments,
    shapes and the meaning of ``frame_ndim``.

    Returns:
        ``state.shape[:-frame_ndim]`` (broadcast with the observation's leading shape).
    """
    ndim = _frame_ndim(mask, frame_ndim)
    mask = mask.to(state.device)
    sigma = torch.as_tensor(sigma, dtype=state.dtype, device=state.device)
    residual = (observation.to(state.device) - state) / sigma
    residual = torch.where(mask, residual, torch.zeros((), dtype=state.dtype, device=state.device))
    squared = 0.5 * residual.square()
    if ndim == 0:
        return squared
    return squared.sum(dim=tuple(range(-ndim, 0)))


def log_likelihood_linear(
    observation_vector: torch.Tensor,
    state: torch.Tensor,
    operator: LinearOperator,
    sigma: float | torch.Tensor,
) -> torch.Tensor:
    """``log p(y | x) = log N(y; H vec(x), sigma^2 I)`` for a general linear ``H``.

    Built as ``pyro.distributions.Normal(H vec(x), sigma).to_event(1)``.  With a selection
    matrix ``H`` (rows of the identity) this equals :func:`log_likelihood` with the
    corresponding mask.  Gradient: ``H^T (y - H x) / sigma^2``.

    Args:
        observation_vector: ``(..., n_observations)``.
        state: ``(..., *operator.frame_shape)``.
        operator: the :class:`LinearOperator` ``H``.
        sigma: noise standard deviation (float, or tensor broadcastable to
            ``(..., n_observations)``).

    Returns:
        The leading shape ``(...)``.
    """
    predicted = operator.apply(state)
    distribution = pyro_distributions.Normal(predicted, sigma, validate_args=False).to_event(1)
    return distribution.log_prob(observation_vector.to(state.device))


def observation_cost_linear(
    observation_vector: torch.Tensor,
    state: torch.Tensor,
    operator: LinearOperator,
    sigma: float | torch.Tensor,
) -> torch.Tensor:
    """``l(y, x) = |y - H vec(x)|^2 / (2 sigma^2)`` for a general linear ``H``.

    Shapes as in :func:`log_likelihood_linear`; returns the leading shape ``(...)``.
    """
    predicted = operator.apply(state)
    sigma = torch.as_tensor(sigma, dtype=predicted.dtype, device=predicted.device)
    residual = (observation_vector.to(predicted.device) - predicted) / sigma
    return 0.5 * residual.square().sum(dim=-1)


# --------------------------------------------------------------------------- the model objects


def _frame_sigma(sigma: float | torch.Tensor, batch_ndim: int, event_ndim: int) -> Any:
    """A per-batch sigma ``(B,)`` reshaped to broadcast over ``(B, *event)``; floats as is."""
    if isinstance(sigma, torch.Tensor) and sigma.ndim == 1 and batch_ndim == 1:
        return sigma.reshape(-1, *([1] * event_ndim))
    return sigma


@dataclass(frozen=True)
class FrameObservation:
    """The observation of one frame for a batch of B states: ``y = H x + sigma * xi``.

    Two kinds of ``H`` (docs/design.md §2): a mask (``mask`` given, ``y`` lifted to the
    grid) or a general :class:`~ardm_infer.observe.LinearOperator` (``operator`` given,
    ``y`` a vector).  Every strategy and the objective J evaluate the likelihood of a frame
    through this object, i.e. through :func:`log_likelihood` / :func:`observation_cost` (mask)
    or :func:`log_likelihood_linear` / :func:`observation_cost_linear` (linear).

    Attributes:
        observation: mask: lifted ``(B, C, *space)``; linear: ``(B, n_observations)``.
        sigma: noise std, a float or ``(B,)`` (one per batch element).
        mask: bool ``(B, C, *space)`` (mask kind), else None.
        operator: the linear ``H`` (linear kind), else None.
    """

    observation: torch.Tensor
    sigma: float | torch.Tensor
    mask: torch.Tensor | None = None
    operator: LinearOperator | None = None

    def __post_init__(self) -> None:
        if (self.mask is None) == (self.operator is None):
            raise ValueError("a FrameObservation has exactly one of mask and operator")

    @property
    def is_mask(self) -> bool:
        """Whether ``H`` is a mask (lifted observations)."""
        return self.mask is not None

    @property
    def batch(self) -> int:
        """B."""
        return self.observation.shape[0]

    @property
    def frame_ndim(self) -> int:
        """Number of trailing dims of one state frame ``(C, *space)``."""
        if self.mask is not None:
            return self.observation.ndim - 1
        return len(self.operator.frame_shape)

    def _sigma(self, event_ndim: int) -> float | torch.Tensor:
        return _frame_sigma(self.sigma, 1, event_ndim)

    def log_likelihood(self, state: torch.Tensor) -> torch.Tensor:
        """log p(y | x) of every state ``(..., B, C, *space)``; returns ``(..., B)``."""
        if self.mask is not None:
            return log_likelihood(
                self.observation,
                state,
                self.mask,
                self._sigma(self.frame_ndim),
                frame_ndim=self.frame_ndim,
            )
        return log_likelihood_linear(self.observation, state, self.operator, self._sigma(1))

    def cost(self, state: torch.Tensor) -> torch.Tensor:
        """l(y, x) = |y - H x|^2 / (2 sigma^2) of every state ``(..., B, C, *space)``;
        returns ``(..., B)``."""
        if self.mask is not None:
            return observation_cost(
                self.observation,
                state,
                self.mask,
                self._sigma(self.frame_ndim),
                frame_ndim=self.frame_ndim,
            )
        return observation_cost_linear(self.observation, state, self.operator, self._sigma(1))

    def squared_residual(self, state: torch.Tensor) -> torch.Tensor:
        """|y - H x|^2 (no noise scaling) of every state ``(..., B, C, *space)``; ``(..., B)``."""
        if self.mask is not None:
            dims = tuple(range(-self.frame_ndim, 0))
            residual = torch.where(self.mask, self.observation - state, 0.0)
            return residual.square().sum(dims)
        residual = self.observation.to(state.device) - self.operator.apply(state)
        return residual.square().sum(-1)

    def tile(self, members: int) -> FrameObservation:
        """The same observation for the flattened ensemble batch ``(members * B, ...)``,
        members-major (flat index ``m * B + n`` is member m of batch element n)."""

        def tiled_like(x: torch.Tensor) -> torch.Tensor:
            return (
                x.unsqueeze(0).expand(members, *x.shape).reshape(members * x.shape[0], *x.shape[1:])
            )

        sigma = self.sigma
        if isinstance(sigma, torch.Tensor) and sigma.ndim == 1:
            sigma = sigma.unsqueeze(0).expand(members, -1).reshape(-1)
        return FrameObservation(
            observation=tiled_like(self.observation),
            sigma=sigma,
            mask=None if self.mask is None else tiled_like(self.mask),
            operator=self.operator,
        )


@dataclass(frozen=True)
class ObservationModel:
    """The observations of a horizon of frames: ``y_t = H_t x_t + sigma * xi_t``.

    The observation operator and the one likelihood, as one object that every strategy reads
    (docs/design.md §2).  Two kinds:

    * mask (``mask`` given): ``H_t = M_t`` selects grid points; ``observation`` is lifted
      ``(N, T, C, *space)`` (zeros where unobserved) and ``mask`` is bool
      ``(T, C, *space)`` (shared by the N trajectories) or ``(N, T, C, *space)``;
    * linear (``operator`` given): one :class:`~ardm_infer.observe.LinearOperator` ``H`` for
      every observed frame; ``observation`` is ``(N, T, n_observations)`` and
      ``observed_frames`` bool ``(T,)`` says which frames are observed (values of the others
      are ignored).

    Attributes:
        observation: as above.
        sigma: observation-noise std (> 0, finite), in the units of the state.
        mask: the mask (mask kind), else None.
        operator: ``H`` (linear kind), else None.
        observed_frames: bool ``(T,)`` (linear kind), else None.
    """

    observation: torch.Tensor
    sigma: float
    mask: torch.Tensor | None = None
    operator: LinearOperator | None = None
    observed_frames: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.mask is None) == (self.operator is None):
            raise ValueError("an ObservationModel has exactly one of mask and operator")
        object.__setattr__(self, "sigma", _checked_sigma(self.sigma))
        observation = _float_tensor(self.observation, "observation")
        if self.operator is not None:
            if not isinstance(self.operator, LinearOperator):
                raise TypeError(
                    f"operator must be a LinearOperator, got {type(self.operator).__name__}"
                )
            if self.observed_frames is None:
                raise ValueError("a linear ObservationModel needs observed_frames (T,) bool")
            n_obs = self.operator.observation_size
            if observation.ndim != 3 or observation.shape[-1] != n_obs:
                raise ValueError(
                    f"observation must be (trajectories, horizon, {n_obs}) for an operator "
                    f"with {n_obs} rows; got {tuple(observation.shape)}"
                )
            observed = _bool_tensor(self.observed_frames, "observed_frames")
            if tuple(observed.shape) != (observation.shape[1],):
                raise ValueError(
                    f"observed_frames must be ({observation.shape[1]},) bool, got "
                    f"{tuple(observed.shape)}"
                )
            object.__setattr__(self, "observed_frames", observed)
            where = observed.to(observation.device).view(1, -1, 1).expand_as(observation)
        else:
            if self.observed_frames is not None:
                raise ValueError("observed_frames belongs to a linear model (the mask says it)")
            mask = _bool_tensor(self.mask, "mask")
            if observation.ndim < 3 or tuple(mask.shape) not in (
                tuple(observation.shape),
                tuple(observation.shape[1:]),
            ):
                raise ValueError(
                    f"mask must be (horizon, channels, *space) or (trajectories, horizon, "
                    f"channels, *space) for observations {tuple(observation.shape)}; got "
                    f"{tuple(mask.shape)}"
                )
            object.__setattr__(self, "mask", mask)
            where = mask.to(observation.device).expand_as(observation)
        object.__setattr__(self, "observation", _finite_where(observation, where))

    # ------------------------------------------------------------------ description

    @property
    def is_mask(self) -> bool:
        """Whether ``H`` is a mask (lifted observations on the grid)."""
        return self.mask is not None

    @property
    def kind(self) -> str:
        """``"mask"`` or ``"linear"``."""
        return "mask" if self.mask is not None else "linear"

    @property
    def trajectories(self) -> int:
        return self.observation.shape[0]

    @property
    def horizon(self) -> int:
        return self.observation.shape[1]

    def _frame_ndim(self) -> int:
        return self.observation.ndim - 2

    def mask_at(self, t: int) -> torch.Tensor:
        """Mask of frame t, ``(trajectories, channels, *space)`` (broadcast if shared)."""
        if self.mask is None:
            raise ValueError(
                f"the observation operator is {self.operator!r}, not a mask: there is no "
                "mask of a frame (use frame(t) for its likelihood)"
            )
        frame = tuple(self.observation.shape[2:])
        m = self.mask[..., t, *([slice(None)] * len(frame))]
        return m.expand(self.trajectories, *frame)

    def observed(self, t: int) -> bool:
        """Whether any point of frame t is observed (for any trajectory)."""
        if self.mask is None:
            return bool(self.observed_frames[t])
        return bool(self.mask_at(t).any())

    def frame(self, t: int) -> FrameObservation | None:
        """The observation of frame t for the N trajectories, or None if it is unobserved."""
        if not self.observed(t):
            return None
        if self.mask is None:
            return FrameObservation(self.observation[:, t], self.sigma, operator=self.operator)
        return FrameObservation(self.observation[:, t], self.sigma, mask=self.mask_at(t))

    # ------------------------------------------------------------------ derived models

    def window(self, start: int, stop: int) -> ObservationModel:
        """The model of frames ``start .. min(stop, horizon) - 1`` (frame 0 = ``start``)."""
        stop = min(stop, self.horizon)
        frame = self.observation.shape[2:]
        if self.mask is None:
            return ObservationModel(
                self.observation[:, start:stop],
                self.sigma,
                operator=self.operator,
                observed_frames=self.observed_frames[start:stop],
            )
        time = (slice(start, stop), *([slice(None)] * len(frame)))
        return ObservationModel(self.observation[:, start:stop], self.sigma, self.mask[..., *time])

    def with_sigma(self, sigma: float) -> ObservationModel:
        """The same observations scored with another noise level."""
        return replace(self, sigma=sigma)

    def to(self, dtype: torch.dtype) -> ObservationModel:
        """The same model with observations in ``dtype``."""
        if self.observation.dtype == dtype:
            return self
        return replace(self, observation=self.observation.to(dtype))


def _checked_sigma(sigma: Any) -> float:
    """sigma as a float; ``TypeError`` / ``ValueError`` naming it unless a positive finite
    number."""
    if isinstance(sigma, torch.Tensor) and sigma.numel() == 1:
        sigma = sigma.item()
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"sigma (observation noise std) must be a number, got {sigma!r}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma (observation noise std) must be positive and finite, got {sigma}")
    return sigma


def _float_tensor(x: Any, name: str) -> torch.Tensor:
    """``x`` as a floating tensor (numpy arrays converted; integers to the default dtype)."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{name} must be a tensor or an array, got {type(x).__name__}") from (
                error
            )
    if x.is_complex():
        raise TypeError(f"{name} must be real, got {x.dtype}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return x


def _bool_tensor(x: Any, name: str) -> torch.Tensor:
    """A boolean mask; numbers are accepted when every entry is 0 or 1."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{name} must be a boolean tensor, got {type(x).__name__}") from (error)
    if x.dtype == torch.bool:
        return x
    if x.is_complex() or not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must be boolean (or numbers that are all 0 or 1)")
    return x != 0


def _finite_where(observation: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Refuse non-finite observed values (``ValueError`` naming the first frame); non-finite
    values where nothing is observed are ignored by definition and set to 0."""
    finite = torch.isfinite(observation)
    bad = observed & ~finite
    if bool(bad.any()):
        frame = int(torch.nonzero(bad.flatten(2).any(-1).any(0)).flatten()[0])
        raise ValueError(
            f"observation has non-finite values where observed ({int(bad.sum())} entries; "
            f"first at frame t={frame}): observations must be finite where the mask is true"
        )
    if bool(finite.all()):
        return observation
    return torch.where(finite, observation, torch.zeros((), dtype=observation.dtype))
