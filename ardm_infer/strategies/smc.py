"""``smc``: a particle filter over physical frames, with bootstrap or guided proposals.

Sequential importance resampling (Gordon, Salmond & Smith 1993; Doucet, de Freitas & Gordon
2001), run independently for every trajectory and batched over trajectories and particles.
Particles are the members: the ensemble within a step is ``(members, trajectories, C, *space)``.

At frame t every particle i is propagated by a proposal q_t and reweighted,

    x_t^i ~ q_t(. | c_{t-1}^i),
    log w_t^i = log W_{t-1}^i + log p(y_t | x_t^i) + log p(x_t^i | c^i) - log q_t(x_t^i | c^i),

with W_{t-1} the normalised weights of the previous frame and ``log p(y | x)`` the library's
one masked Gaussian likelihood (:func:`ardm_infer.observe.log_likelihood`); unobserved frames
contribute log p(y | x) = 0.

* Bootstrap proposal (default): q = the process prior, so the last two terms cancel.
* Guided proposal (``Config.proposal``): the ARDM's sub-steps are run with a control u_s
  (a :class:`~ardm_infer.guidance.Guidance`, e.g. DPS or a trained controller).  The
  proposal and the prior differ on the whole denoising path, and the exact path-space weight
  is the discrete Girsanov ratio of docs/design.md §2 reported by the kernel,

      log q_u(path) - log p(path) = sum_s (u_s . xi_s) / tau_s + |u_s|^2 / (2 tau_s^2)
                                  = ``Propagation.log_ratio``,

  so the incremental log-weight is ``log p(y_t | x_t) - log_ratio``.  Because the weight is
  computed on the whole path (z_S, ..., z_1, x_t), it is exact for any control, at any number
  of sub-steps; marginal densities of x_t are never needed (the path is an auxiliary variable
  whose prior conditional integrates to one).  A deterministic sampler (eta = 0) has no path
  density, so guided proposals refuse it.

Resampling is systematic (Kitagawa 1996, "Monte Carlo filter and smoother for non-Gaussian
nonlinear state space models", J. Comput. Graph. Stat. 5(1)), per trajectory, triggered when
the effective sample size ESS = 1 / sum_i (W^i)^2 (Kong, Liu & Wong 1994) drops below
``ess_threshold * members``.  The whole window of k context frames is resampled with the
particles.  Frames already emitted are not rewritten: the ensemble trajectory returned is the
sequence of *filtering* particle sets, the frame emitted at t being the particles after
(possible) resampling at t with log-weights ``diagnostics["log_weights"][t]``.

The log-evidence estimate is the standard unbiased one (Del Moral 2004, Proposition 7.4.1):

    log p^(y_{1:t}) = sum_{s <= t} log sum_i W_{s-1}^i w_s^i,

with w_s^i the incremental weights; exp of it is unbiased for p(y_{1:t}).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..guidance import Guidance
from ..process import GuidedProcess, Process
from ..soc.weights import effective_sample_size
from .base import (
    DivergenceError,
    ProblemView,
    StrategyState,
    initial_window,
    propagate,
    register,
)
from .config import option, validate_config

__all__ = ["SMC", "effective_sample_size", "systematic_resample"]


def systematic_resample(log_weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Systematic resampling (Kitagawa 1996), independently for every trajectory.

    One uniform U_n ~ U[0, 1) per trajectory n gives the N positions p_j = (j + U_n) / N,
    j = 0..N-1; particle i gets the positions falling in [C_{i-1}, C_i), with C the cumulative
    normalised weights.  Every particle is copied floor(N W_i) or ceil(N W_i) times and the
    expected number of copies is N W_i (unbiased).  Particles of zero weight are never chosen.

    Args:
        log_weights: ``(members, trajectories)`` log-weights (normalisation not required).
        generator: draws the ``trajectories`` uniforms.

    Returns:
        Ancestor indices ``(members, trajectories)`` (long), non-decreasing along members.
    """
    members, trajectories = log_weights.shape
    dtype = log_weights.dtype
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    weights = torch.softmax(log_weights.to(dtype), dim=0).T  # (trajectories, members)
    cdf = torch.cumsum(weights, dim=-1)
    # The last cumulative weight is 1 by definition; pin it against round-off.
    cdf = torch.cat([cdf[:, :-1], torch.ones_like(cdf[:, -1:])], dim=-1).contiguous()
    offset = torch.rand(
        (trajectories, 1), generator=generator, dtype=dtype, device=log_weights.device
    )
    steps = torch.arange(members, dtype=dtype, device=log_weights.device)
    positions = ((steps + offset) / members).contiguous()  # (trajectories, members)
    ancestors = torch.searchsorted(cdf, positions, right=True).clamp_(max=members - 1)
    return ancestors.T.contiguous()


def _check_proposal(process: Process, config: Any) -> None:
    """A guided proposal needs an ARDM with a stochastic sampler (docs/design.md §2)."""
    if config.proposal is None:
        return
    if not isinstance(process, GuidedProcess):
        raise ValueError(
            f"smc: Config.proposal guides the denoising sub-steps of an ARDM, but "
            f"{type(process).__name__} is a numerical process without step_frame; use the "
            "bootstrap proposal (proposal=None) on numerical dynamics"
        )
    schedule = getattr(process, "schedule", None)
    if schedule is not None:
        schedule.require_stochastic("smc with a guided proposal")


@register
class SMC:
    """Particle filter over frames (bootstrap or guided proposals, exact path-space weights)."""

    name = "smc"
    divergence_hint = "use more particles, a guided proposal or process_noise"

    @dataclass(frozen=True)
    class Config:
        """Options of the particle filter (module docstring)."""

        proposal: Callable[[ProblemView, int], Guidance | None] | None = option(  # noqa: RUF009
            None,
            "None for the bootstrap proposal (the process prior), or a factory "
            "(problem, t) -> Guidance | None called at every frame t (0-based) with the "
            "strategy's ProblemView; None from it means bootstrap at this frame. A factory "
            "that reads later frames declares how many in an int attribute `lookahead` (e.g. "
            "controller_proposal); without one it may read frame t only. The guidance sees "
            "the flattened batch (members * trajectories, C, *space), members-major (flat "
            "index m * trajectories + n is member m of trajectory n), so per-trajectory data "
            "(problem.observation_at(t)) is tiled members times. Needs an ARDM with a "
            "stochastic schedule (eta > 0). A guidance with an int `vjps` counter has its "
            "increase added to the run's VJP cost.",
            kind="callable",
            optional=True,
        )
        ess_threshold: float = option(
            0.5,
            "Resample a trajectory's particles when ESS < ess_threshold * members; 0 never "
            "resamples (sequential importance sampling), 1 resamples at (almost) every frame.",
            low=0.0,
            high=1.0,
        )
        process_noise: float = option(
            0.0,
            "Std of Gaussian jitter x_t <- x_t + process_noise * xi added to every propagated "
            "particle (0 = none), e.g. for deterministic dynamics such as Lorenz-96 where a "
            "bootstrap filter would never diversify its particles. This changes the model to "
            "x_t = f(c_{t-1}) + process_noise * xi: the filter is then exact for that model.",
            low=0.0,
        )

        def __post_init__(self) -> None:
            validate_config(self)
            lookahead = getattr(self.proposal, "lookahead", 0)
            if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 0:
                raise TypeError(
                    f"SMC.Config.proposal.lookahead must be an int >= 0, got {lookahead!r}"
                )

    def lookahead(self, config: Config) -> int:
        """0 (a filter), or the look-ahead its proposal declares (``proposal.lookahead``)."""
        if config.proposal is None:
            return 0
        return int(getattr(config.proposal, "lookahead", 0))

    def init(
        self,
        process: Process,
        problem: ProblemView,
        members: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        """Uniform weights on the context repeated over ``members`` particles.

        The window is ``(members, trajectories, k, C, *space)``; ``log_weights`` is
        ``(members, trajectories)`` equal to -log(members).
        """
        _check_proposal(process, config)
        window = initial_window(problem, members, process.context_length)
        log_weights = torch.full(
            (members, problem.trajectories),
            -math.log(members),
            dtype=window.dtype,
            device=window.device,
        )
        diagnostics: dict[str, Any] = {
            "ess": (),
            "resampled": (),
            "resample_count": torch.zeros(
                problem.trajectories, dtype=torch.long, device=window.device
            ),
            "log_evidence": (),
            "log_weights": (),
            "kl": (),
        }
        return StrategyState(window=window, log_weights=log_weights, diagnostics=diagnostics)

    def step(
        self,
        process: Process,
        problem: ProblemView,
        state: StrategyState,
        t: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        """Propagate, reweight, maybe resample; returns a new state (``state`` is not modified).

        Diagnostics appended per frame (each ``(trajectories,)`` unless stated):
        ``ess`` (after reweighting, before resampling), ``resampled`` (bool),
        ``log_evidence`` (running log p^(y_{1:t})), ``log_weights`` (normalised weights of
        the emitted particles, ``(members, trajectories)``), ``kl`` (particle-mean control
        energy of the guided proposal, zeros for bootstrap); ``resample_count`` is the running
        number of resampling events per trajectory.

        Raises:
            DivergenceError: (a RuntimeError) if every particle of a trajectory gets zero
                weight (log-weights all -inf or NaN), naming the frame and the trajectories.
        """
        _check_proposal(process, config)
        members, trajectories = state.window.shape[:2]
        guidance = config.proposal(problem, t) if config.proposal is not None else None
        if guidance is not None and not isinstance(guidance, Guidance):
            raise TypeError(
                "Config.proposal must return a Guidance (with needs_grad and control) or None, "
                f"got {type(guidance).__name__}"
            )
        vjps_before = int(getattr(guidance, "vjps", 0) or 0)
        with torch.no_grad():
            prop = propagate(process, state.window, generator, guidance=guidance, frame=t)
            frame = prop.frame.detach()
            if config.process_noise > 0:
                frame = frame + config.process_noise * torch.randn(
                    frame.shape, generator=generator, dtype=frame.dtype, device=frame.device
                )
            # Incremental log-weights (members, trajectories).
            increment = torch.zeros(members, trajectories, dtype=frame.dtype, device=frame.device)
            observation = problem.frame(t)
            if observation is not None:
                increment = increment + observation.log_likelihood(frame).to(frame.dtype)
            if guidance is not None and prop.log_ratio is not None:
                increment = increment - prop.log_ratio.detach().to(frame.dtype)
            # A NaN or +inf weight (diverged particle) counts as zero weight.
            increment = torch.where(
                torch.isnan(increment) | (increment == math.inf),
                torch.full((), -math.inf, dtype=frame.dtype, device=frame.device),
                increment,
            )
            previous = state.log_weights
            if previous is None:
                previous = torch.full_like(increment, -math.log(members))
            joint = previous.to(frame.dtype) + increment
            log_normaliser = torch.logsumexp(joint, dim=0)  # log sum_i W_{t-1}^i w_t^i
            collapsed = ~torch.isfinite(log_normaliser)
            if bool(collapsed.any()):
                which = torch.nonzero(collapsed).flatten().tolist()
                raise DivergenceError(
                    f"smc: the weights of all {members} particles collapsed (every log-weight "
                    f"is -inf or NaN) at frame t={t} for trajectories {which}; the "
                    "observations are impossible under the proposal (sigma too small, "
                    "observations far from every particle, or diverged particles); use more "
                    "particles, a guided proposal or a larger sigma",
                    "smc",
                    t,
                    which,
                )
            log_weights = joint - log_normaliser
            ess = effective_sample_size(log_weights, normalised=True)
            resample = ess < config.ess_threshold * members
            window = torch.cat([state.window[:, :, 1:], frame.unsqueeze(2)], dim=2)
            if bool(resample.any()):
                ancestors = systematic_resample(log_weights, generator)
                keep = torch.arange(members, device=ancestors.device).unsqueeze(1)
                ancestors = torch.where(resample.unsqueeze(0), ancestors, keep)
                columns = torch.arange(trajectories, device=ancestors.device).unsqueeze(0)
                window = window[ancestors, columns]
                log_weights = torch.where(
                    resample.unsqueeze(0),
                    torch.full((), -math.log(members), dtype=frame.dtype, device=frame.device),
                    log_weights,
                )
            emitted = window[:, :, -1].clone()  # not a view: frees the window
        diag = state.diagnostics
        history = diag.get("log_evidence") or (torch.zeros_like(log_normaliser),)
        running = history[-1] + log_normaliser
        kl = (
            prop.kl.detach().mean(0)
            if guidance is not None and prop.kl is not None
            else torch.zeros_like(ess)
        )
        resample_count = (
            diag.get("resample_count", torch.zeros_like(resample, dtype=torch.long))
            + resample.long()
        )
        vjps = int(getattr(guidance, "vjps", 0) or 0) - vjps_before
        return (
            state.record(
                ess=ess, resampled=resample, log_evidence=running, log_weights=log_weights, kl=kl
            )
            .with_diagnostics(resample_count=resample_count)
            .replace(
                window=window,
                frames=(*state.frames, emitted),
                log_weights=log_weights,
                vjps=state.vjps + vjps,
            )
        )
