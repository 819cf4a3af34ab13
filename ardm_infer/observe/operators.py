"""Observation operators, masks and observation noise.

An observation of a frame ``x`` of shape ``(channels, *space)`` is ``y = H x + noise``
with ``noise ~ N(0, sigma^2 I)`` (docs/design.md §2).  Two kinds of ``H`` are provided:

* :class:`MaskOperator` -- pointwise selection ``H = M``.  Its observation is kept
  *lifted* to the full grid: ``y`` has the frame's shape ``(..., channels, *space)``
  with zeros where ``M`` is False.  The lifted observation together with the boolean mask
  is the canonical representation used across the library (likelihood, preview buffer of
  the controller, regimes).
* :class:`LinearOperator` -- any linear map given as a matrix of shape
  ``(n_observations, n_state)`` acting on the flattened frame; its observation is a vector
  ``(..., n_observations)``.

Masks are boolean tensors over the frame ``(channels, *space)``.  Spatial patterns
(:func:`subsample_mask`, :func:`random_mask`) choose *locations* in space; every channel at
a chosen location is observed.

Randomness only comes from an explicit :class:`torch.Generator`.  Random numbers are drawn
on the generator's device and then moved to the device of the data, so a CPU generator
gives the same numbers whether the data live on the CPU or on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

__all__ = [
    "LinearOperator",
    "MaskOperator",
    "ObservationOperator",
    "add_noise",
    "local_average_operator",
    "random_mask",
    "subsample_mask",
]


@runtime_checkable
class ObservationOperator(Protocol):
    """Anything that maps a state to its (noise-free) observation ``H x``."""

    def apply(self, state: torch.Tensor) -> torch.Tensor:
        """Return ``H x`` for a batch of states ``(..., channels, *space)``."""
        ...


def _check_frame_shape(frame_shape: Sequence[int]) -> tuple[int, ...]:
    """Validate and normalise a frame shape ``(channels, *space)``."""
    try:
        shape = tuple(int(n) for n in frame_shape)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"frame_shape must be a sequence of integers (channels, *space); got {frame_shape!r}"
        ) from error
    if len(shape) < 2:
        raise ValueError(
            f"frame_shape must be (channels, *space) with at least one spatial axis; got {shape}"
        )
    if any(n < 1 for n in shape):
        raise ValueError(f"frame_shape must have positive sizes; got {shape}")
    return shape


def _per_axis(value: int | Sequence[int], n_axes: int, what: str) -> tuple[int, ...]:
    """Broadcast an int (or a 1-tuple) to one value per spatial axis."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer or a tuple of integers; got {value!r}")
    if isinstance(value, int):
        return (value,) * n_axes
    values = tuple(value)
    if len(values) == 1:
        values = values * n_axes
    if len(values) != n_axes or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(
            f"{what} must be an integer or a tuple of {n_axes} integers (one per spatial axis); "
            f"got {value!r}"
        )
    return values


def subsample_mask(
    frame_shape: Sequence[int],
    stride: int | Sequence[int],
    offset: int | Sequence[int] = 0,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Regular subsampling: observe every ``stride``-th point along each spatial axis.

    Along spatial axis ``a`` of size ``n_a`` the observed indices are
    ``i = offset_a + k * stride_a`` for ``k = 0, 1, ...`` with ``i < n_a``; the mask is the
    outer product over axes, i.e. ``ceil((n_a - offset_a) / stride_a)`` points per axis
    (exactly ``n_a / stride_a`` when the stride divides the axis and the offset is 0).
    All channels are observed at the chosen locations.

    Args:
        frame_shape: ``(channels, *space)``, one or more spatial axes (1-D KS, 2-D
            Kolmogorov, ...).
        stride: positive int applied to every spatial axis, or a tuple with one entry per
            spatial axis.  Each entry must not exceed the size of its axis.
        offset: first observed index per axis (int or tuple), ``0 <= offset < stride``.
        device: device of the returned mask (default CPU).

    Returns:
        Boolean mask of shape ``frame_shape = (channels, *space)``.
    """
    shape = _check_frame_shape(frame_shape)
    space = shape[1:]
    strides = _per_axis(stride, len(space), "stride")
    offsets = _per_axis(offset, len(space), "offset")
    mask = torch.ones((1,) * len(shape), dtype=torch.bool, device=device)
    for axis, (size, step, start) in enumerate(zip(space, strides, offsets, strict=True)):
        if step < 1:
            raise ValueError(
                f"stride must be a positive integer; got {step} on spatial axis {axis}"
            )
        if step > size:
            raise ValueError(
                f"stride {step} is larger than spatial axis {axis} of size {size} "
                f"(frame_shape {shape})"
            )
        if not 0 <= start < step:
            raise ValueError(
                f"offset must satisfy 0 <= offset < stride; got offset {start} with stride "
                f"{step} on spatial axis {axis}"
            )
        observed = torch.arange(size, device=device) % step == start
        view = [1] * len(shape)
        view[axis + 1] = size
        mask = mask & observed.view(view)
    return mask.expand(shape).clone()


def random_mask(
    frame_shape: Sequence[int],
    fraction: float,
    generator: torch.Generator,
    *,
    batch_shape: Sequence[int] = (),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Observe exactly ``round(fraction * n_points)`` locations drawn uniformly at random.

    ``n_points = prod(space)`` is the number of spatial locations; the locations are drawn
    without replacement, independently for every entry of ``batch_shape`` (e.g. one draw per
    frame), and every channel at a chosen location is observed.  ``round`` is Python's
    (half to even).  The draw is a uniform random permutation per mask: the ``k`` largest of
    ``n_points`` i.i.d. uniforms, computed in one batched ``topk``.

    Args:
        frame_shape: ``(channels, *space)``.
        fraction: in ``(0, 1]``.
        generator: the source of randomness (uniforms drawn on ``generator.device``).
        batch_shape: leading shape of independent masks, e.g. ``(horizon,)``.
        device: device of the returned mask (default: the generator's device).

    Returns:
        Boolean mask ``(*batch_shape, channels, *space)``.

    Raises:
        ValueError: if ``fraction`` is not in ``(0, 1]`` or selects no point at all.
    """
    shape = _check_frame_shape(frame_shape)
    if not isinstance(generator, torch.Generator):
        raise ValueError("random_mask needs an explicit torch.Generator (never the global RNG)")
    fraction = float(fraction)
    if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    n_points = math.prod(shape[1:])
    count = round(fraction * n_points)
    if count < 1:
        raise ValueError(
            f"fraction {fraction} of {n_points} spatial points selects "
            f"round({fraction * n_points:g}) = 0 points: the mask would observe nothing; "
            f"use fraction >= {0.5 / n_points:.3g}"
        )
    batch = tuple(int(n) for n in batch_shape)
    target = torch.device(device) if device is not None else generator.device
    uniforms = torch.rand((*batch, n_points), generator=generator, device=generator.device)
    chosen = uniforms.topk(count, dim=-1).indices
    flat = torch.zeros((*batch, n_points), dtype=torch.bool, device=generator.device)
    flat.scatter_(-1, chosen, True)
    spatial = flat.view(*batch, 1, *shape[1:]).expand(*batch, *shape)
    return spatial.to(target).clone()


def add_noise(
    clean: torch.Tensor,
    sigma: float | torch.Tensor,
    generator: torch.Generator,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Add Gaussian observation noise: ``y = clean + sigma * xi``, ``xi ~ N(0, I)``.

    With a ``mask`` (lifted observations) the result is ``M (clean + sigma * xi)``: noise is
    only added where observed and unobserved entries are exactly zero.  The standard normals
    ``xi`` have the full shape of ``clean`` and are drawn on ``generator.device`` then moved
    to ``clean.device``.

    Args:
        clean: noise-free observation, any shape, e.g. lifted ``(batch, time, channels,
            *space)`` or a vector ``(..., n_observations)``.
        sigma: noise standard deviation, positive; a float or a tensor broadcastable to
            ``clean`` (e.g. per channel).
        generator: the source of randomness.
        mask: optional boolean mask broadcastable to ``clean``.

    Returns:
        The noisy observation, same shape and dtype as ``clean``.
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError("add_noise needs an explicit torch.Generator (never the global RNG)")
    sigma_tensor = torch.as_tensor(sigma, dtype=clean.dtype, device=clean.device)
    if not bool(torch.all(torch.isfinite(sigma_tensor) & (sigma_tensor > 0))):
        raise ValueError(f"sigma must be positive and finite; got {sigma!r}")
    xi = torch.randn(clean.shape, generator=generator, device=generator.device, dtype=clean.dtype)
    noisy = clean + sigma_tensor * xi.to(clean.device)
    if mask is None:
        return noisy
    return torch.where(
        mask.to(clean.device), noisy, torch.zeros((), dtype=clean.dtype, device=clean.device)
    )


class MaskOperator:
    """Pointwise selection ``H = M`` with the observation lifted to the full grid.

    ``apply(x) = M x``: the state where ``mask`` is True, exactly zero elsewhere.  Since
    ``M`` is a diagonal 0/1 matrix, ``H^T = H`` and :meth:`adjoint` equals :meth:`apply`.

    Args:
        mask: boolean tensor over the frame ``(channels, *space)`` or broadcastable to the
            states it is applied to (e.g. ``(time, channels, *space)`` for whole windows).
    """

    def __init__(self, mask: torch.Tensor) -> None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError("MaskOperator needs a boolean torch.Tensor mask")
        self.mask = mask

    def apply(self, state: torch.Tensor) -> torch.Tensor:
        """Lifted observation ``M x``.

        Args:
            state: ``(..., channels, *space)``, broadcastable with ``mask``.

        Returns:
            ``(..., channels, *space)``: ``x`` where observed, ``0`` elsewhere.
        """
        mask = self.mask.to(state.device)
        return torch.where(mask, state, torch.zeros((), dtype=state.dtype, device=state.device))

    def adjoint(self, observation: torch.Tensor) -> torch.Tensor:
        """``H^T y = M y`` for a lifted observation ``(..., channels, *space)``."""
        return self.apply(observation)

    @property
    def observed_count(self) -> int:
        """Number of observed entries of the mask, ``sum(M)``."""
        return int(self.mask.sum())

    def __repr__(self) -> str:
        return (
            f"MaskOperator(shape={tuple(self.mask.shape)}, "
            f"observed={self.observed_count}/{self.mask.numel()})"
        )


class LinearOperator:
    """A general linear observation operator ``y = H vec(x)``.

    ``H`` is a matrix ``(n_observations, n_state)`` acting on the frame flattened in
    row-major (C) order, ``n_state = prod(frame_shape)``.

    Args:
        matrix: ``(n_observations, n_state)``.
        frame_shape: ``(channels, *space)`` of the frames it acts on, with
            ``prod(frame_shape) == n_state``.  ``None`` means the state's last axis already
            is the flattened frame, i.e. states ``(..., n_state)``.
    """

    def __init__(self, matrix: torch.Tensor, frame_shape: Sequence[int] | None = None) -> None:
        if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2:
            raise ValueError("LinearOperator needs a 2-D matrix (n_observations, n_state)")
        self.matrix = matrix
        n_state = matrix.shape[1]
        if frame_shape is None:
            self.frame_shape: tuple[int, ...] = (n_state,)
        else:
            self.frame_shape = tuple(int(n) for n in frame_shape)
            if math.prod(self.frame_shape) != n_state:
                raise ValueError(
                    f"matrix has {n_state} columns but frame_shape {self.frame_shape} has "
                    f"{math.prod(self.frame_shape)} entries"
                )

    @property
    def observation_size(self) -> int:
        """``n_observations``, the length of an observation vector."""
        return self.matrix.shape[0]

    def _flatten(self, state: torch.Tensor) -> torch.Tensor:
        frame_ndim = len(self.frame_shape)
        if tuple(state.shape[state.ndim - frame_ndim :]) != self.frame_shape:
            raise ValueError(
                f"state must end with the frame shape {self.frame_shape}; got {tuple(state.shape)}"
            )
        return state.reshape(*state.shape[: state.ndim - frame_ndim], -1)

    def apply(self, state: torch.Tensor) -> torch.Tensor:
        """``H vec(x)``.

        Args:
            state: ``(..., *frame_shape)``.

        Returns:
            ``(..., n_observations)``.
        """
        matrix = self.matrix.to(device=state.device, dtype=state.dtype)
        return self._flatten(state) @ matrix.T

    def adjoint(self, observation: torch.Tensor) -> torch.Tensor:
        """``H^T y`` reshaped to the frame: ``(..., n_observations) -> (..., *frame_shape)``."""
        matrix = self.matrix.to(device=observation.device, dtype=observation.dtype)
        return (observation @ matrix).reshape(*observation.shape[:-1], *self.frame_shape)

    def __repr__(self) -> str:
        return (
            f"LinearOperator(n_observations={self.observation_size}, "
            f"frame_shape={self.frame_shape})"
        )


def local_average_operator(
    frame_shape: Sequence[int],
    width: int,
    stride: int | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> LinearOperator:
    """A :class:`LinearOperator` of local averages on a periodic 1-D grid.

    Observation r of channel c is the mean of ``width`` consecutive points starting at
    ``i_r = r * stride``: ``y = (1 / width) sum_{k < width} x[c, (i_r + k) mod n]``; with
    ``width = 1`` and ``stride = s`` it is the subsampling mask of stride s written as a matrix.
    Rows are ordered channel-major (all averages of channel 0 first).

    Args:
        frame_shape: ``(channels, n)``, one spatial axis.
        width: points per average, ``1 <= width <= n``.
        stride: distance between the starts of consecutive averages (default ``width``:
            non-overlapping averages), ``1 <= stride <= n``.
        dtype: dtype of the matrix (cast to the state's dtype when applied).
        device: device of the matrix.

    Returns:
        The operator, ``(channels * ceil(n / stride), channels * n)``.
    """
    shape = _check_frame_shape(frame_shape)
    if len(shape) != 2:
        raise ValueError(f"local averages are defined on 1-D frames (channels, n); got {shape}")
    channels, n = shape
    stride = width if stride is None else stride
    for what, value in (("width", width), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= n:
            raise ValueError(f"{what} must be an integer in [1, {n}]; got {value!r}")
    starts = torch.arange(0, n, stride, device=device)
    columns = (starts.unsqueeze(1) + torch.arange(width, device=device)) % n  # (rows, width)
    per_channel = torch.zeros(starts.numel(), n, dtype=dtype, device=device)
    per_channel.scatter_add_(
        1, columns, torch.full(columns.shape, 1.0 / width, dtype=dtype, device=device)
    )
    matrix = torch.block_diag(*([per_channel] * channels))
    return LinearOperator(matrix, shape)
