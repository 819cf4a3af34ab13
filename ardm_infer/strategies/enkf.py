"""``enkf``: ensemble forecast by the process, then a Kalman analysis of each new frame.

The members are advanced one frame by the process (an ARDM or a numerical solver, through
:func:`~ardm_infer.strategies.base.propagate`); on every frame where the problem observes
something, the new frame of every member is replaced by its analysis.  Two analyses are
offered, both batched over trajectories (each trajectory may have its own mask):

``variant="perturbed"``
    The stochastic EnKF (Burgers, van Leeuwen & Evensen 1998; Evensen 2003): every member is
    updated with its own perturbed observation,

        x_a^i = x_f^i + K (y + eps^i - H x_f^i),    K = P H^T (H P H^T + R)^-1,
        P = X X^T / (N - 1),                         eps^i ~ N(0, R) (centred over members),

    with X the (inflated) forecast anomalies.  Localisation is a Schur product of the
    Gaspari-Cohn matrix with P H^T and H P H^T (Houtekamer & Mitchell 2001).

``variant="etkf"``
    The ensemble transform Kalman filter (Bishop, Etherton & Majumdar 2001) in the
    ensemble-space form of Hunt, Kostelich & Szunyogh (2007), with the symmetric square
    root, which preserves the mean (Wang, Bishop & Julier 2004; Sakov & Oke 2008):

        Y = H X,   A~ = [(N - 1) I + Y^T R^-1 Y]^-1,   w = A~ Y^T R^-1 (y - H x_f_mean),
        W = [(N - 1) A~]^(1/2),                        x_a^i = x_f_mean + X (w + W_i).

    Localisation is the LETKF of Hunt et al. (2007): one analysis per grid location, whose
    observation-error precision R^-1 is weighted by the Gaspari-Cohn factor of the distance
    between the location and each observation.  All locations are analysed at once.

Observations follow the library's lifted convention: ``H = M`` selects the observed entries
of the frame; unobserved entries get weight 0 in R^-1 (ETKF) or are gathered away with
padding (perturbed-obs), so nothing loops over trajectories.

Multiplicative inflation (Anderson & Anderson 1999) scales the forecast anomalies before the
analysis, on analysis frames and only for trajectories that observe something there.

Relaxation to prior spread (``rtps = alpha``, Whitaker & Hamill 2012, eq. 3) rescales the
analysis anomalies of every entry after the analysis so that the analysis spread moves a
fraction alpha back toward the forecast spread (before inflation):

    x_a^i <- x_a_mean + (alpha sigma_f / sigma_a + 1 - alpha) (x_a^i - x_a_mean),

i.e. ``sigma_a <- (1 - alpha) sigma_a + alpha sigma_f`` entry by entry, the mean unchanged.

Fixed-lag smoother (``lag = L > 0``): the ensemble Kalman smoother of Evensen & van Leeuwen
(2000) over a window of L frames.  The filter runs L frames ahead of the frame it emits; each
analysis of frame s also updates the stored ensembles of frames s - L .. s - 1 with the same
ensemble transform / gain, through their cross-covariances with frame s.  It is computed as
the analysis of the augmented state [x_s, x_{s-1}, ..., x_{s-L}] whose lagged part is
unobserved (Evensen 2003 §5), so it holds for both variants and for localisation (the lagged
entries at a grid location take that location's transform or Gaspari-Cohn taper).  Inflation
and RTPS act on the filter's frame only (the lagged anomalies enter un-inflated; DAPPER's
``EnKS`` does the same).  Frame t is emitted once the observations of frames t+1 .. t+L are in,
p(x_t | y_{<= t+L}) (the last L frames of the horizon see fewer); the filter's own ensemble,
not the smoothed one, continues the forecast.

Context update (``update_context=True``): a process of context length k is Markov in its
window of the last k frames, not in the newest frame alone, so the filter's state is that
window.  Each analysis of frame t then also updates the k - 1 earlier frames that stay in the
window (the augmented state [x_t, x_{t-1}, ..., x_{t-k+1}] with its lagged part unobserved,
as for the smoother), so that the next frame is forecast from a context consistent with the
observations instead of an analysed frame after un-analysed ones.  The frames already
emitted are not revised: it is still a filter (look-ahead 0 without ``lag``).

Shapes: the ensemble of one frame is ``(members, trajectories, C, *space)``; observation and
mask of one frame are ``(trajectories, C, *space)``.  Internally the frame is flattened to
``D = C * prod(space)`` with the channel leading, so entry ``d`` sits at grid location
``d % prod(space)``; every channel at a location shares that location.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..observe import FrameObservation
from ..process import Process
from .base import ProblemView, StrategyState, initial_window, propagate, register
from .config import option, validate_config
from .enkf_linear import etkf_analysis_linear, perturbed_analysis_linear
from .enkf_mask import augment, etkf_analysis, perturbed_analysis, relax_to_prior_spread
from .localisation import gaspari_cohn, localisation_kernel, periodic_distance

__all__ = [
    "EnsembleKalmanFilter",
    "etkf_analysis",
    "etkf_analysis_linear",
    "gaspari_cohn",
    "localisation_kernel",
    "periodic_distance",
    "perturbed_analysis",
    "perturbed_analysis_linear",
    "relax_to_prior_spread",
]

VARIANTS = ("perturbed", "etkf")


# --------------------------------------------------------------------------- the strategy


@register
class EnsembleKalmanFilter:
    """Ensemble Kalman filter on the process's own ensemble forecast (module docstring).

    Each step advances the window of every member by one frame with the process, then, if
    frame ``t`` is observed anywhere, replaces the new frame by its analysis (perturbed-obs
    or ETKF, optionally inflated and localised) and slides the window with it.

    Diagnostics (lists, one entry per analysis frame): ``analysis_frames`` (the ``t``),
    ``innovation_rms`` ``(trajectories,)`` RMS over the observed entries of
    ``y - H x_forecast_mean`` (NaN where a trajectory observes nothing), and
    ``forecast_spread`` / ``analysis_spread`` ``(trajectories,)``, the square root of the
    member variance (``1/(k-1)``) averaged over the frame, before inflation / after analysis.
    """

    name = "enkf"
    divergence_hint = "use more members, an inflation closer to 1 or a localisation_radius"

    @dataclass(frozen=True)
    class Config:
        """Options of the EnKF (module docstring)."""

        variant: str = option(
            "etkf",
            '"etkf" (square-root, Hunt et al. 2007) or "perturbed" (stochastic EnKF, Burgers '
            "et al. 1998).",
            kind=str,
            choices=VARIANTS,
        )
        inflation: float = option(
            1.0,
            "Multiplicative factor (usually >= 1) on the forecast anomalies before each analysis.",
            low=0.0,
            low_open=True,
        )
        localisation_radius: float | None = option(
            None,
            "Gaspari-Cohn half-width in grid points (weights reach 0 at twice this distance; "
            "periodic distance, per axis on 2-D grids), or None; mask observations only.",
            low=0.0,
            low_open=True,
            optional=True,
        )
        initial_spread: float = option(
            0.0,
            "Std of Gaussian perturbations added by init to the context of every member "
            "(from the generator); a deterministic process needs > 0, or all members stay "
            "identical and no analysis can act.",
            low=0.0,
        )
        rtps: float = option(
            0.0,
            "Relaxation to prior spread alpha (Whitaker & Hamill 2012; module docstring), "
            "applied after every analysis; 0 is none.",
            low=0.0,
            high=1.0,
        )
        update_context: bool = option(
            False,
            "Also update the process's earlier context frames (the window it conditions the "
            "next frame on) with each analysis, through their cross-covariances with the "
            "analysed frame (module docstring); the emitted frames are unchanged, so the "
            "look-ahead stays the same.",
            kind=bool,
        )
        lag: int = option(
            0,
            "Fixed-lag smoother window L (module docstring): frame t is emitted after the "
            "observations up to t + L are assimilated; 0 is the filter.",
            kind=int,
            low=0,
        )

        def __post_init__(self) -> None:
            validate_config(self)

    def lookahead(self, config: Config) -> int:
        """Frames of future observations read before a frame is emitted: ``config.lag``."""
        return config.lag

    def init(
        self,
        process: Process,
        problem: ProblemView,
        members: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        """Window ``(members, trajectories, k, C, *space)``: the context, optionally perturbed."""
        if members < 2:
            raise ValueError(
                f"the EnKF needs >= 2 members to estimate a covariance, got members={members}"
            )
        if not problem.is_mask and config.localisation_radius is not None:
            raise ValueError(
                "enkf: localisation_radius weights observations by their distance to each grid "
                f"point, and a general linear H ({problem.operator!r}) has no observation "
                "locations; use localisation_radius=None"
            )
        if not problem.is_mask and config.lag > 0:
            raise ValueError(
                "enkf: the fixed-lag smoother (lag > 0) augments the state with unobserved "
                "lagged frames, which needs mask observations; use lag=0 with a general "
                f"linear H ({problem.operator!r})"
            )
        if not problem.is_mask and config.update_context:
            raise ValueError(
                "enkf: update_context augments the state with unobserved context frames, "
                "which needs mask observations; use update_context=False with a general "
                f"linear H ({problem.operator!r})"
            )
        window = initial_window(problem, members, process.context_length)
        if config.initial_spread > 0:
            noise = torch.randn(
                window.shape, generator=generator, dtype=window.dtype, device=generator.device
            )
            window = window + config.initial_spread * noise.to(window.device)
        diagnostics = {
            "analysis_frames": (),
            "innovation_rms": (),
            "forecast_spread": (),
            "analysis_spread": (),
        }
        carry = _SmootherCarry(pending=(), filtered=-1) if config.lag > 0 else None
        return StrategyState(window=window, diagnostics=diagnostics, carry=carry)

    def step(
        self,
        process: Process,
        problem: ProblemView,
        state: StrategyState,
        t: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        """Forecast frame t for every member, then analyse it if frame t is observed.

        With ``config.lag = L > 0`` the filter first advances to frame min(t + L, horizon - 1)
        (:meth:`_advance_smoother`) and frame t's smoothed ensemble is emitted.
        """
        if config.lag > 0:
            return self._advance_smoother(process, problem, state, t, config, generator)
        with torch.no_grad():
            frame = propagate(process, state.window, generator, frame=t).frame
            observation = problem.frame(t)
            if observation is not None:
                context = _context(state.window, config)
                frame, records = self._analyse(frame, observation, config, generator, context)
                state = state.record(analysis_frames=t, **records)
                if context:
                    state = state.replace(window=_with_context(state.window, context))
            return state.push(frame)

    def _advance_smoother(
        self,
        process: Process,
        problem: ProblemView,
        state: StrategyState,
        t: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        """Filter frames up to min(t + lag, horizon - 1), smoothing the pending frames, and
        emit frame t.

        The carry (:class:`_SmootherCarry`) holds the not yet emitted frames' ensembles
        (``(members, trajectories, C, *space)`` each, oldest first) and the last frame the
        filter has reached; ``state.window`` is the filter's window.
        """
        pending = list(state.carry.pending)
        reached = state.carry.filtered
        window = state.window
        with torch.no_grad():
            for s in range(reached + 1, min(t + config.lag, problem.horizon - 1) + 1):
                frame = propagate(process, window, generator, frame=s).frame
                observation = problem.frame(s)
                if observation is not None:
                    context = _context(window, config)
                    lagged = pending + context
                    frame, records = self._analyse(frame, observation, config, generator, lagged)
                    pending = lagged[: len(pending)]
                    if context:
                        window = _with_context(window, lagged[len(pending) :])
                    state = state.record(analysis_frames=s, **records)
                pending.append(frame)
                window = torch.cat([window[:, :, 1:], frame.unsqueeze(2)], dim=2)
                reached = s
            emitted = pending.pop(0).clone()  # not a view of the augmented state
        return state.replace(
            window=window,
            frames=(*state.frames, emitted),
            carry=_SmootherCarry(pending=tuple(pending), filtered=reached),
        )

    @staticmethod
    def _analyse(
        frame: torch.Tensor,
        observation: FrameObservation,
        config: Config,
        generator: torch.Generator,
        lagged: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Analysis of ``frame`` ``(members, trajectories, C, *space)`` and its diagnostics.

        ``lagged`` (smoother): earlier frames' ensembles, updated in place in the list with
        the same analysis (augmented state, module docstring).
        """
        if not observation.is_mask:
            return EnsembleKalmanFilter._analyse_linear(frame, observation, config, generator)
        mask = observation.mask.to(frame.device)
        y = observation.observation.to(frame.device, frame.dtype)
        ensemble, observed, where = frame, y, mask
        if lagged:
            ensemble, observed, where = augment(frame, lagged, y, mask, config.inflation)
        if config.variant == "etkf":
            analysis = etkf_analysis(
                ensemble,
                observed,
                where,
                observation.sigma,
                config.inflation,
                config.localisation_radius,
            )
        else:
            analysis = perturbed_analysis(
                ensemble,
                observed,
                where,
                observation.sigma,
                generator,
                config.inflation,
                config.localisation_radius,
            )
        if lagged:
            parts = analysis.split(frame.shape[2], dim=2)
            analysis = parts[0]
            lagged[:] = list(parts[1:])
        analysis = relax_to_prior_spread(frame, analysis, config.rtps, mask)
        reduce = tuple(range(1, frame.ndim - 1))
        weight = mask.to(frame.dtype)
        count = weight.sum(reduce)
        residual = torch.where(mask, y - frame.mean(0), 0.0).square().sum(reduce)
        return analysis, {
            "innovation_rms": torch.where(
                count > 0, residual / count.clamp_min(1), torch.nan
            ).sqrt(),
            "forecast_spread": frame.var(0).mean(reduce).sqrt(),
            "analysis_spread": analysis.var(0).mean(reduce).sqrt(),
        }

    @staticmethod
    def _analyse_linear(
        frame: torch.Tensor,
        observation: FrameObservation,
        config: Config,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """As :meth:`_analyse` for a general linear H (vector observations)."""
        if config.rtps > 0:
            raise ValueError(
                "enkf: rtps relaxes the spread of the observed entries of a mask; with a "
                "general linear H use rtps=0"
            )
        y = observation.observation.to(frame.device, frame.dtype)
        if config.variant == "etkf":
            analysis = etkf_analysis_linear(
                frame, y, observation.operator, observation.sigma, config.inflation
            )
        else:
            analysis = perturbed_analysis_linear(
                frame, y, observation.operator, observation.sigma, generator, config.inflation
            )
        reduce = tuple(range(1, frame.ndim - 1))
        innovation = y - observation.operator.apply(frame.mean(0))
        return analysis, {
            "innovation_rms": innovation.square().mean(-1).sqrt(),
            "forecast_spread": frame.var(0).mean(reduce).sqrt(),
            "analysis_spread": analysis.var(0).mean(reduce).sqrt(),
        }


def _context(window: torch.Tensor, config: EnsembleKalmanFilter.Config) -> list[torch.Tensor]:
    """The context frames that stay in ``window`` ``(members, trajectories, k, C, *space)``
    after the next push (``k - 1`` of them, oldest first), if ``config.update_context``."""
    if not config.update_context:
        return []
    return list(window[:, :, 1:].unbind(2))


def _with_context(window: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
    """``window`` with its last ``len(context)`` frames replaced by ``context``."""
    return torch.cat([window[:, :, : window.shape[2] - len(context)], torch.stack(context, 2)], 2)


@dataclass(frozen=True)
class _SmootherCarry:
    """The fixed-lag smoother's carry: the filtered, not yet emitted frames' ensembles
    (``(members, trajectories, C, *space)`` each, oldest first) and the last frame filtered."""

    pending: tuple[torch.Tensor, ...]
    filtered: int
