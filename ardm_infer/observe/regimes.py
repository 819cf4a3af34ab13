"""Observation regimes: spatial pattern x temporal interval x noise (docs/design.md §6).

A :class:`Regime` is defined once and used everywhere: it draws the masks and the noisy
lifted observations of a truth trajectory, and it has one canonical spec string.

Timing convention
-----------------
The ``horizon`` frames after the ``k`` context frames are numbered ``t = 1, ..., horizon``
(array index ``t - 1``).  Frame ``t`` is observed iff

    t > offset  and  (t - offset) % every == 0,

so with the default ``offset = 0`` the observed frames are ``every, 2 every, ...``: with
``every = 1`` every frame is observed, with ``every = 8`` frames ``8, 16, 24, ...``.
``offset`` delays the whole pattern: the first observed frame is ``offset + every``.
Unobserved frames have an all-False mask.

Spatial patterns
----------------
* :class:`Stride` -- every ``step``-th location along each spatial axis, starting at
  ``phase`` (default 0).
* :class:`RandomFraction` -- exactly ``round(fraction * n_points)`` locations drawn
  uniformly without replacement, redrawn independently for every frame.
* :class:`Full` -- every location.

Every channel at an observed location is observed.

Spec grammar
------------
A spec is either a preset name or comma-separated items, order-free, case-insensitive and
whitespace tolerant::

    spec   := item ("," item)*
    item   := PRESET | "full" | key "=" value
    key    := "stride" | "phase" | "fraction" | "every" | "sigma" | "offset"
    stride := INT | INT "x" INT ["x" INT ...]      (one per spatial axis; "8" == "8x8")
    phase  := INT | INT "x" INT ["x" INT ...]      (first observed index per axis, < stride)
    fraction := FLOAT | FLOAT "%"                   (in (0, 1]; "2%" == "0.02")
    every  := INT >= 1         sigma := FLOAT > 0 (finite)         offset := INT >= 0

Exactly one spatial pattern (``stride=``, ``fraction=``, ``full`` or a preset's), an
``every`` and a ``sigma`` are required; ``offset`` and ``phase`` default to 0 (``phase`` only
with a stride).  A preset name may be
combined with overrides, e.g. ``"sparse-gappy, sigma=0.2"``.  Examples::

    "sparse"                           (needs pde= because the systems' strides differ)
    "stride=16, every=8, sigma=0.1"
    "fraction=0.02,every=1,sigma=0.1"
    "full, every=2, sigma=0.5"
    "stride=8x8, every=1, sigma=0.1"
    "stride=16, phase=5, every=8, sigma=0.1, offset=3"

Equality of regimes ignores ``name``; different spellings of the same regime compare equal
and, for the same generator, draw identical masks and observations.

Length: this file is the one home of a regime -- its parts, timing rule, masks, presets and
spec grammar with its parser (about 740 lines); it is kept whole so that every rule a regime
follows is read, and changed, in one place.
"""

from __future__ import annotations

import difflib
import math
import operator as _operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

import torch

from ..systems import available_systems, get_system, lookup_system
from .operators import MaskOperator, _check_frame_shape, add_noise, random_mask, subsample_mask

__all__ = [
    "PDE_NAMES",
    "PRESET_NAMES",
    "Full",
    "RandomFraction",
    "Regime",
    "Spatial",
    "Stride",
    "parse_regime",
    "preset",
]

PRESET_NAMES: tuple[str, ...] = (
    "dense",
    "dense-gappy",
    "sparse",
    "sparse-gappy",
    "random",
    "random-gappy",
)
"""The six named regimes of docs/design.md §6."""

PDE_NAMES: tuple[str, ...] = available_systems()
"""Systems with named presets (every registered system, :mod:`ardm_infer.systems`): 1-D
Kuramoto-Sivashinsky (256 points), 2-D Kolmogorov flow, Lorenz-96 (40 variables).  Each
system's ``preset_strides`` gives the stride of ``dense`` and ``sparse``."""

_PRESET_FRACTION = 0.02
_PRESET_GAPPY_EVERY = 8
_PRESET_SIGMA = 0.05

_KEYS = ("stride", "fraction", "every", "sigma", "offset", "phase")
_SPATIAL_KEYS = ("stride", "fraction", "full")
_EXAMPLES = (
    "'sparse' (a preset: " + ", ".join(PRESET_NAMES) + "), "
    "'stride=16, every=8, sigma=0.1', 'fraction=0.02, every=1, sigma=0.1', "
    "'full, every=2, sigma=0.5'"
)
_INT = re.compile(r"[+-]?[0-9]+")


# --------------------------------------------------------------------------- spatial parts


def _integer(value: object, what: str, minimum: int) -> int:
    """``value`` as a Python int >= ``minimum`` (0 or 1); ``ValueError`` otherwise (bools and
    floats rejected)."""
    kind = "a positive integer" if minimum == 1 else "a non-negative integer"
    if isinstance(value, bool):
        raise ValueError(f"{what} must be {kind}; got {value!r}")
    try:
        number = _operator.index(value)
    except TypeError as error:
        raise ValueError(f"{what} must be {kind}; got {value!r}") from error
    if number < minimum:
        raise ValueError(f"{what} must be {kind}; got {number}")
    return number


def _per_axis_ints(value: object, what: str, minimum: int) -> int | tuple[int, ...]:
    """An int or a tuple of ints >= ``minimum``; a tuple of equal entries becomes the int."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(_integer(v, what, minimum) for v in value)
        if not values:
            raise ValueError(f"{what} tuple must not be empty")
        return values[0] if len(set(values)) == 1 else values
    return _integer(value, what, minimum)


def _axes_value(value: int | tuple[int, ...]) -> str:
    return str(value) if isinstance(value, int) else "x".join(str(v) for v in value)


@dataclass(frozen=True)
class Stride:
    """Observe every ``step``-th location along each spatial axis, from index ``phase``
    (indices ``phase, phase + step, ...``).

    ``step`` and ``phase`` are ints (same on every axis) or tuples with one entry per spatial
    axis, with ``0 <= phase < step`` on every axis.  A tuple whose entries are all equal is
    stored as the int, so ``Stride((8, 8)) == Stride(8)``: both mean "every 8th point on
    every axis".  On a grid with ``n_a`` points on axis ``a`` this observes
    ``ceil((n_a - phase_a) / step_a)`` points per axis.
    """

    step: int | tuple[int, ...]
    phase: int | tuple[int, ...] = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "step", _per_axis_ints(self.step, "stride", 1))
        object.__setattr__(self, "phase", _per_axis_ints(self.phase, "phase", 0))
        n = max(len(v) if isinstance(v, tuple) else 1 for v in (self.step, self.phase))
        if any(p >= s for s, p in zip(self.steps(n), self.phases(n), strict=True)):
            raise ValueError(
                f"phase must be smaller than the stride on every axis (0 <= phase < stride); "
                f"got phase {_axes_value(self.phase)} with stride {self.spec_value()}"
            )

    def steps(self, n_spatial_axes: int) -> tuple[int, ...]:
        """The step on each of ``n_spatial_axes`` axes (``ValueError`` on a rank mismatch)."""
        return self._per_axis(self.step, n_spatial_axes, "stride")

    def phases(self, n_spatial_axes: int) -> tuple[int, ...]:
        """The phase on each of ``n_spatial_axes`` axes (``ValueError`` on a rank mismatch)."""
        return self._per_axis(self.phase, n_spatial_axes, "phase")

    def _per_axis(self, value: int | tuple[int, ...], n: int, what: str) -> tuple[int, ...]:
        if isinstance(value, int):
            return (value,) * n
        if len(value) != n:
            raise ValueError(
                f"{what} {_axes_value(value)} has {len(value)} entries but the grid has "
                f"{n} spatial axis/axes; give one {what} per axis or a single int"
            )
        return value

    def spec_value(self) -> str:
        """``"16"`` or ``"8x4"`` (the stride)."""
        return _axes_value(self.step)

    def spec(self) -> str:
        """Canonical spec item(s), e.g. ``"stride=16"`` or ``"stride=16, phase=3"``."""
        if self.phase == 0:
            return f"stride={self.spec_value()}"
        return f"stride={self.spec_value()}, phase={_axes_value(self.phase)}"


@dataclass(frozen=True)
class RandomFraction:
    """Observe ``round(fraction * n_points)`` random locations, redrawn every observed frame.

    ``fraction`` must lie in ``(0, 1]``.
    """

    fraction: float

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool):
            raise ValueError(f"fraction must be a number in (0, 1]; got {self.fraction!r}")
        try:
            fraction = float(self.fraction)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"fraction must be a number in (0, 1]; got {self.fraction!r}"
            ) from error
        if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
            raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
        object.__setattr__(self, "fraction", fraction)

    def spec(self) -> str:
        """Canonical spec item, e.g. ``"fraction=0.02"``."""
        return f"fraction={self.fraction!r}"


@dataclass(frozen=True)
class Full:
    """Observe every location of the grid."""

    def spec(self) -> str:
        """Canonical spec item ``"full"``."""
        return "full"


Spatial = Stride | RandomFraction | Full
"""A spatial observation pattern."""


# --------------------------------------------------------------------------- the regime


@dataclass(frozen=True)
class Regime:
    """An observation regime: spatial pattern x temporal interval x Gaussian noise.

    Observations are ``y_t = M_t (x_t + sigma * xi_t)`` (lifted to the full grid) on the
    observed frames ``t`` (see the module docstring for the timing convention:
    frame ``t = 1..horizon`` is observed iff ``t > offset`` and ``(t - offset) % every == 0``).

    Args:
        spatial: :class:`Stride`, :class:`RandomFraction` or :class:`Full`.
        every: observe one frame in ``every`` (>= 1).
        sigma: observation-noise standard deviation in normalised units (> 0, finite).
        offset: delay (>= 0) of the temporal pattern; first observed frame ``offset + every``.
        name: optional label (e.g. the preset name); ignored by ``==`` and ``hash``.
    """

    spatial: Spatial
    every: int
    sigma: float
    offset: int = 0
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.spatial, Stride | RandomFraction | Full):
            raise ValueError(
                "spatial must be Stride(step), RandomFraction(fraction) or Full(); "
                f"got {self.spatial!r}"
            )
        object.__setattr__(self, "every", _integer(self.every, "every", 1))
        object.__setattr__(self, "offset", _integer(self.offset, "offset", 0))
        if isinstance(self.sigma, bool):
            raise ValueError(f"sigma must be a positive finite number; got {self.sigma!r}")
        try:
            sigma = float(self.sigma)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"sigma must be a positive finite number; got {self.sigma!r}"
            ) from error
        if not (math.isfinite(sigma) and sigma > 0.0):
            raise ValueError(
                f"sigma (observation noise) must be positive and finite; got {sigma!r}"
            )
        object.__setattr__(self, "sigma", sigma)

    # ------------------------------------------------------------------ description

    def spec(self) -> str:
        """The canonical spec string, e.g. ``"stride=16, every=8, sigma=0.1"``.

        ``parse_regime(regime.spec()) == regime``; ``offset`` is written only when nonzero.
        """
        parts = [self.spatial.spec(), f"every={self.every}", f"sigma={self.sigma!r}"]
        if self.offset:
            parts.append(f"offset={self.offset}")
        return ", ".join(parts)

    def __str__(self) -> str:
        return self.spec() if self.name is None else f"{self.name} ({self.spec()})"

    # ------------------------------------------------------------------ checks

    def validate(self, frame_shape: Sequence[int], horizon: int) -> None:
        """Check that the regime makes sense on a grid and horizon; ``ValueError`` if not.

        Checks: ``frame_shape = (channels, *space)`` with at least one spatial axis; a
        stride with one entry per spatial axis and no larger than its axis; a random
        fraction that selects at least one point per frame; ``horizon >= 1``; at least one
        observed frame within the horizon (``offset + every <= horizon``).

        Args:
            frame_shape: ``(channels, *space)``.
            horizon: number of frames ``t = 1..horizon`` after the context.
        """
        shape = _check_frame_shape(frame_shape)
        space = shape[1:]
        horizon = _integer(horizon, "horizon", 1)
        if isinstance(self.spatial, Stride):
            for axis, (size, step) in enumerate(
                zip(space, self.spatial.steps(len(space)), strict=True)
            ):
                if step > size:
                    raise ValueError(
                        f"stride {step} is larger than the grid: spatial axis {axis} has only "
                        f"{size} points (frame_shape {shape}); use stride <= {size}"
                    )
            self.spatial.phases(len(space))  # one phase per axis
        elif isinstance(self.spatial, RandomFraction):
            n_points = math.prod(space)
            expected = self.spatial.fraction * n_points
            if round(expected) < 1:
                raise ValueError(
                    f"fraction {self.spatial.fraction!r} of {n_points} spatial points selects "
                    f"round({expected:g}) = 0 points per frame: the regime observes nothing; "
                    f"use fraction >= {0.5 / n_points:.3g} on this grid"
                )
        first = self.offset + self.every
        if first > horizon:
            raise ValueError(
                f"every={self.every} with offset={self.offset} observes no frame within a "
                f"horizon of {horizon} frames (the first observed frame would be t={first}); "
                f"use every + offset <= {horizon}"
            )

    # ------------------------------------------------------------------ masks

    def observed_frames(
        self, horizon: int, *, start: int = 0, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Which of the frames ``t = start + 1 .. start + horizon`` are observed.

        Returns:
            Boolean ``(horizon,)``; entry ``t - start - 1`` is ``t > offset and
            (t - offset) % every == 0``.
        """
        t = torch.arange(start + 1, start + horizon + 1, device=device)
        return (t > self.offset) & ((t - self.offset) % self.every == 0)

    def masks(
        self,
        frame_shape: Sequence[int],
        horizon: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Observation masks of the frames ``t = 1..horizon``.

        Random masks draw ``horizon`` independent masks (one per frame, observed or not,
        uniforms drawn on ``generator.device``) and then blank the unobserved frames, so
        a gappy regime observes, on its frames, the same points as its every-step twin for
        the same generator.  Strided and full masks use no randomness.

        Args:
            frame_shape: ``(channels, *space)``.
            horizon: number of frames after the context.
            generator: required for :class:`RandomFraction`; otherwise unused.
            device: device of the result (default: the generator's device, else CPU).

        Returns:
            Boolean ``(horizon, channels, *space)``; all False on unobserved frames.
        """
        self.validate(frame_shape, horizon)
        return self.window_masks(frame_shape, 0, horizon, generator, device=device)

    def window_masks(
        self,
        frame_shape: Sequence[int],
        start: int,
        frames: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Masks of the frames ``t = start + 1 .. start + frames`` (a window of a longer run).

        The same rule as :meth:`masks` (which is ``window_masks`` from ``start = 0`` after
        :meth:`validate`); a window may hold no observed frame at all.  Random masks draw
        ``frames`` masks from ``generator``.

        Args:
            frame_shape: ``(channels, *space)``.
            start: frames of the run before the window (>= 0).
            frames: the window's length (>= 1).
            generator: required for :class:`RandomFraction`; otherwise unused.
            device: device of the result (default: the generator's device, else CPU).

        Returns:
            Boolean ``(frames, channels, *space)``; all False on unobserved frames.
        """
        shape = _check_frame_shape(frame_shape)
        start = _integer(start, "start", 0)
        frames = _integer(frames, "frames", 1)
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        device = torch.device(device)
        if isinstance(self.spatial, RandomFraction):
            if not isinstance(generator, torch.Generator):
                raise ValueError(
                    "a random-fraction regime needs an explicit torch.Generator to draw its masks"
                )
            masks = random_mask(
                shape, self.spatial.fraction, generator, batch_shape=(frames,), device=device
            )
        else:
            if isinstance(self.spatial, Stride):
                n = len(shape) - 1
                frame = subsample_mask(
                    shape, self.spatial.steps(n), self.spatial.phases(n), device=device
                )
            else:
                frame = torch.ones(shape, dtype=torch.bool, device=device)
            masks = frame.expand(frames, *shape)
        observed = self.observed_frames(frames, start=start, device=device)
        return masks & observed.view(frames, *(1,) * len(shape))

    def observe(
        self, truth: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw masks and noisy lifted observations of a batch of truth trajectories.

        ``y_t = M_t (x_t + sigma * xi_t)``.  The masks are drawn first (see :meth:`masks`),
        then the standard normals ``xi`` (full shape of ``truth``), both from ``generator``
        on its device; results are moved to ``truth.device``.

        Args:
            truth: ``(batch, horizon, channels, *space)``, the frames ``t = 1..horizon``.
            generator: the source of randomness (masks and noise).

        Returns:
            ``(observation, mask)``: the lifted observation ``(batch, horizon, channels,
            *space)`` (zeros where unobserved, same dtype as ``truth``) and the boolean mask
            ``(horizon, channels, *space)``, shared by the batch and broadcastable to it.
        """
        if not isinstance(generator, torch.Generator):
            raise ValueError("observe needs an explicit torch.Generator (never the global RNG)")
        if truth.ndim < 4:
            raise ValueError(
                "truth must have shape (batch, horizon, channels, *space); "
                f"got {tuple(truth.shape)}"
            )
        horizon, frame_shape = truth.shape[1], tuple(truth.shape[2:])
        mask = self.masks(frame_shape, horizon, generator, device=truth.device)
        clean = MaskOperator(mask).apply(truth)
        return add_noise(clean, self.sigma, generator, mask), mask


# --------------------------------------------------------------------------- presets


def _normalise_name(name: str) -> str:
    return re.sub(r"[\s_-]+", "-", name.strip().lower())


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.5)
    if not close:
        return ""
    return "did you mean " + " or ".join(repr(c) for c in close) + "? "


def _normalise_pde(pde: str) -> str:
    if not isinstance(pde, str):
        raise ValueError(f"pde must be a string, one of {available_systems()}; got {pde!r}")
    key = _normalise_name(pde)
    system = lookup_system(key)
    if system is not None:
        return system.name
    systems = available_systems()
    spellings = [s for name in systems for s in (name, *get_system(name).aliases)]
    raise ValueError(
        f"no observation presets for pde {pde!r}; {_suggest(key, spellings)}"
        f"presets exist for {', '.join(systems)}; other regimes are built from parts, "
        "e.g. Regime(Full(), every=1, sigma=1.0) or parse_regime('full, every=1, sigma=1')"
    )


def _unknown_preset(name: str) -> ValueError:
    return ValueError(
        f"unknown regime preset {name!r}; {_suggest(name, [*PRESET_NAMES, 'full'])}"
        f"known presets: {', '.join(PRESET_NAMES)}; or write key=value items such as "
        "'stride=16, every=8, sigma=0.1' (keys: stride, fraction, every, sigma, offset, phase, "
        "and the bare word 'full')"
    )


def _preset_regime(name: str, pde: str | None) -> Regime:
    """Preset by normalised name; ``pde=None`` only where the preset is PDE-independent."""
    base, _, suffix = name.partition("-")
    if name not in PRESET_NAMES:
        raise _unknown_preset(name)
    every = _PRESET_GAPPY_EVERY if suffix == "gappy" else 1
    if base == "random":
        spatial: Spatial = RandomFraction(_PRESET_FRACTION)
    else:
        strides = {p: get_system(p).preset_stride(base) for p in available_systems()}
        if pde is None:
            if len(set(strides.values())) > 1:
                per_pde = ", ".join(f"{p}: stride {s}" for p, s in strides.items())
                raise ValueError(
                    f"preset {name!r} depends on the PDE ({per_pde}); pass pde= one of "
                    f"{', '.join(repr(p) for p in available_systems())}"
                )
            step = next(iter(strides.values()))
        else:
            step = strides[pde]
        spatial = Stride(step)
    return Regime(spatial, every=every, sigma=_PRESET_SIGMA, name=name)


def preset(name: str, pde: str) -> Regime:
    """One of the six named regimes of docs/design.md §6 for a PDE.

    ============  ================================================  =====  =======
    name          spatial                                           every  sigma
    ============  ================================================  =====  =======
    dense         stride 4 (KS, Lorenz-96; Kolmogorov: 4 per axis)  1      0.05
    dense-gappy   same                                              8      0.05
    sparse        KS: 16; Kolmogorov: 8 per axis; Lorenz-96: 8      1      0.05
    sparse-gappy  same                                              8      0.05
    random        2 % of points, redrawn every frame                1      0.05
    random-gappy  same                                              8      0.05
    ============  ================================================  =====  =======

    The strides are each system's ``preset_strides`` (:mod:`ardm_infer.systems`).  Names
    are case-insensitive; ``_`` and spaces may replace ``-``.

    Args:
        name: one of :data:`PRESET_NAMES`.
        pde: a registered system (``"ks"``, ``"kolmogorov"``, ``"lorenz96"``) or an alias.

    Returns:
        The :class:`Regime`, with ``name`` set to the canonical preset name.
    """
    if not isinstance(name, str):
        raise ValueError(f"preset name must be a string; got {name!r}")
    return _preset_regime(_normalise_name(name), _normalise_pde(pde))


# --------------------------------------------------------------------------- parser


def _parse_int(key: str, value: str, minimum: int, spec: str) -> int:
    expected = "an integer >= 1" if minimum == 1 else f"an integer >= {minimum}"
    if not _INT.fullmatch(value):
        raise ValueError(
            f"malformed value for {key} in regime spec {spec!r}: expected {expected}, got {value!r}"
        )
    try:
        number = int(value)
    except ValueError as error:  # e.g. beyond Python's digit limit
        raise ValueError(
            f"malformed value for {key} in regime spec {spec!r}: expected {expected}, "
            f"got {value[:20]!r}..."
        ) from error
    if number < minimum:
        raise ValueError(f"{key} must be {expected} in regime spec {spec!r}; got {number}")
    return number


def _parse_float(key: str, value: str, spec: str, expected: str) -> float:
    try:
        return float(value)
    except ValueError as error:
        raise ValueError(
            f"malformed value for {key} in regime spec {spec!r}: expected {expected}, got {value!r}"
        ) from error


def _parse_value(key: str, value: str, spec: str) -> object:
    if not value:
        raise ValueError(f"missing value for {key} in regime spec {spec!r} (write {key}=...)")
    if key in ("stride", "phase"):
        parts = [part.strip() for part in value.split("x")]
        numbers = tuple(_parse_int(key, part, 1 if key == "stride" else 0, spec) for part in parts)
        return Stride(numbers) if key == "stride" else numbers
    if key == "fraction":
        expected = "a number in (0, 1] or a percentage like 2%"
        if value.endswith("%"):
            percent = value[:-1].strip()
            _parse_float(key, percent, spec, expected)  # the error message for bad numbers
            try:  # exact decimal division: "0.3%" gives the same float as "0.003"
                fraction = float(Decimal(percent) / 100)
            except (ArithmeticError, ValueError) as error:
                raise ValueError(
                    f"malformed value for {key} in regime spec {spec!r}: expected {expected}, "
                    f"got {value!r}"
                ) from error
        else:
            fraction = _parse_float(key, value, spec, expected)
        if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
            raise ValueError(f"fraction must be in (0, 1] in regime spec {spec!r}; got {value!r}")
        return RandomFraction(fraction)
    if key == "every":
        return _parse_int(key, value, 1, spec)
    if key == "offset":
        return _parse_int(key, value, 0, spec)
    sigma = _parse_float(key, value, spec, "a positive number")
    if not (math.isfinite(sigma) and sigma > 0.0):
        raise ValueError(
            f"sigma (observation noise) must be positive and finite in regime spec {spec!r}; "
            f"got {value!r}"
        )
    return sigma


def parse_regime(spec: str | Regime, pde: str | None = None) -> Regime:
    """Build a :class:`Regime` from a preset name, a spec string, or a Regime.

    See the module docstring for the grammar.  Examples: ``"sparse"`` (with ``pde``),
    ``"stride=16, every=8, sigma=0.1"``, ``"fraction=0.02,every=1,sigma=0.1"``,
    ``"full,every=2,sigma=0.5"``, ``"stride=8x8, every=1, sigma=0.1"``,
    ``"sparse-gappy, sigma=0.2"`` (preset plus override).

    Args:
        spec: the spec string, or an existing :class:`Regime` (returned unchanged).
        pde: a registered system (``"ks"``, ``"kolmogorov"``, ``"lorenz96"``); needed for
            presets whose stride depends on the system (``sparse``, ``sparse-gappy``),
            unused otherwise.

    Returns:
        The regime; ``name`` is the preset name for a bare preset, else ``None``.

    Raises:
        ValueError: malformed spec, with a message naming what was expected.
    """
    if isinstance(spec, Regime):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"regime spec must be a str or a Regime; got {type(spec).__name__}")
    pde_key = None if pde is None else _normalise_pde(pde)
    text = spec.strip().lower()
    if not text:
        raise ValueError(f"empty regime spec; expected e.g. {_EXAMPLES}")
    base: Regime | None = None
    spatial: Spatial | None = None
    values: dict[str, object] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(
                f"empty item in regime spec {spec!r} (a doubled or trailing comma?); "
                f"expected e.g. {_EXAMPLES}"
            )
        if "=" not in item:
            if item == "full":
                if spatial is not None:
                    raise ValueError(f"more than one spatial pattern in regime spec {spec!r}")
                spatial = Full()
                continue
            if base is not None:
                raise ValueError(f"more than one preset name in regime spec {spec!r}")
            base = _preset_regime(_normalise_name(item), pde_key)
            continue
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key == "full":
            raise ValueError(
                f"'full' takes no value in regime spec {spec!r}; write it as a bare item, "
                "e.g. 'full, every=1, sigma=0.1'"
            )
        if key not in _KEYS:
            raise ValueError(
                f"unknown key {key!r} in regime spec {spec!r}; {_suggest(key, _KEYS)}"
                f"expected keys: {', '.join(_KEYS)} (and the bare word 'full')"
            )
        if key in values:
            raise ValueError(f"duplicate key {key!r} in regime spec {spec!r}")
        parsed = _parse_value(key, value, spec)
        if key in _SPATIAL_KEYS:
            if spatial is not None:
                raise ValueError(
                    f"more than one spatial pattern in regime spec {spec!r}; give one of "
                    "stride=..., fraction=... or full"
                )
            spatial = parsed  # type: ignore[assignment]
        values[key] = parsed

    if base is not None and spatial is None:
        spatial = base.spatial
    if "phase" in values:
        if not isinstance(spatial, Stride):
            raise ValueError(
                f"phase=... in regime spec {spec!r} needs a stride pattern (stride=... or a "
                "strided preset); it is the first observed index of the stride on each axis"
            )
        try:
            spatial = replace(spatial, phase=values["phase"])
        except ValueError as error:
            raise ValueError(f"{error} in regime spec {spec!r}") from error
    if base is not None:
        overridden = spatial != base.spatial or bool(values)
        regime = replace(
            base,
            spatial=spatial,
            every=values.get("every", base.every),
            sigma=values.get("sigma", base.sigma),
            offset=values.get("offset", base.offset),
            name=None if overridden else base.name,
        )
        return regime
    missing = [
        what
        for what, present in (
            ("a spatial pattern (stride=..., fraction=... or full)", spatial is not None),
            ("every=...", "every" in values),
            ("sigma=...", "sigma" in values),
        )
        if not present
    ]
    if missing:
        raise ValueError(
            f"regime spec {spec!r} is missing {', '.join(missing)}; expected e.g. {_EXAMPLES}"
        )
    return Regime(
        spatial,  # type: ignore[arg-type]
        every=values["every"],  # type: ignore[arg-type]
        sigma=values["sigma"],  # type: ignore[arg-type]
        offset=values.get("offset", 0),  # type: ignore[arg-type]
    )
