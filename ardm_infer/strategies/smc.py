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

Other resampling schemes (``Config.resampling``): stratified (Kitagawa 1996), residual (Liu &
Chen 1998) and multinomial (Gordon et al. 1993); all are unbiased (particle i is copied N W^i
times in expectation); systematic and residual add the least resampling noise (Douc, Cappe &
Moulines 2005).

Regularisation (``Config.regularisation``, the regularised particle filter of Musso, Oudjane
& Le Gland 2001; Doucet et al. 2001 §12.2): after resampling, the duplicated particles (or all
of them) are moved by a Gaussian kernel whose covariance is the weighted covariance of the
particles before resampling (the states of the whole window, dimension d = k * C * prod(space)),

    x^i <- x^i + reg * h * C^(1/2) xi^i,   h = N^(-1 / (d + 4))   (Scott's rule),
    C = sum_i W^i (x^i - m)(x^i - m)^T / (1 - sum_i (W^i)^2),   m = sum_i W^i x^i,

so that a deterministic process (Lorenz-96) or a nearly deterministic ARDM frame still
diversifies its particles.  This is how DAPPER's ``PartFilt`` (``reg``, ``nuj``) regularises.
It replaces a sum of Dirac masses by a kernel density: a bias that vanishes as N grows, which
the path-space weights do not correct (they stay exact for the proposal itself).  The plain
kernel adds (reg h)^2 C to the covariance (which, on deterministic dynamics, doubles as
covariance inflation); ``regularisation_kernel="shrunk"`` (Liu & West 2001) also pulls every
particle toward m, x^i <- m + a (x^i - m) + b C^(1/2) xi^i with b = min(reg h, 1),
a = sqrt(1 - b^2), so mean and covariance are kept.

Progressive correction (``Config.tempering_ess``; Oudjane & Musso 2000, the tempering of
Jasra et al. 2011 with kernel moves): when the whole likelihood of frame t would drop the ESS
below ``tempering_ess * members``, it is brought in by stages p(y|x)^delta_j (sum delta_j = 1),
each delta the largest keeping that ESS (bisection); between stages the particles are
resampled and moved by the regularisation kernel (the plain kernel's bandwidth scaled by
sqrt(delta_j), so one frame's stages add the kernel variance of one resampling) and their
likelihood re-evaluated.  The log-evidence increment is the sum of the stages' log-normalisers.
This keeps a broad prior (an uncertain start) from collapsing onto a handful of particles; the
kernel moves are not invariant for the posterior, so it is an approximation of the same kind as
the regularisation, not an exact SMC sampler.

Proposal inflation (``Config.proposal_inflation``, DAPPER's ``qroot``; Chen 2003 §VI-M.2):
with ``process_noise`` sigma_q > 0 the jitter is drawn with the variance multiplied by
``lambda = proposal_inflation`` and corrected in the weight by the exact density ratio
p/q of the two Gaussians, ``-(lambda - 1) |xi|^2 / 2 + (d_frame / 2) log lambda``
(xi the standard normal draw), so the filter still targets the model with noise sigma_q.

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
from .base import (
    DivergenceError,
    ProblemView,
    StrategyState,
    initial_window,
    propagate,
    register,
)
from .config import option, validate_config
from .resampling import (
    REGULARISATION_KERNELS,
    RESAMPLING_METHODS,
    effective_sample_size,
    regularisation_noise,
    resample_ancestors,
    systematic_resample,
)

__all__ = [
    "REGULARISATION_KERNELS",
    "RESAMPLING_METHODS",
    "SMC",
    "effective_sample_size",
    "regularisation_noise",
    "resample_ancestors",
    "systematic_resample",
]

MAX_TEMPERING_STAGES = 100  # progressive correction: the rest of the likelihood comes at once
TEMPERING_BISECTIONS = 30


def _jitter(
    frame: torch.Tensor, config: Any, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``frame + sqrt(lambda) sigma_q xi`` ``(members, trajectories, C, *space)`` and the log
    density ratio log p - log q of the model noise N(0, sigma_q^2) to the proposal noise
    N(0, lambda sigma_q^2), ``(members, trajectories)`` (None when lambda = 1)."""
    xi = torch.randn(frame.shape, generator=generator, dtype=frame.dtype, device=frame.device)
    inflation = config.proposal_inflation
    if inflation == 1.0:
        return frame + config.process_noise * xi, None
    jittered = frame + math.sqrt(inflation) * config.process_noise * xi
    squares = xi.square().reshape(*frame.shape[:2], -1)
    correction = -0.5 * (inflation - 1.0) * squares.sum(-1)
    correction = correction + 0.5 * squares.shape[-1] * math.log(inflation)
    return jittered, correction


def _check_collapse(log_normaliser: torch.Tensor, t: int, members: int) -> None:
    """Raise if a trajectory's weights all vanished (``log_normaliser`` ``(trajectories,)``
    not finite), naming the frame and the trajectories."""
    collapsed = ~torch.isfinite(log_normaliser)
    if bool(collapsed.any()):
        which = torch.nonzero(collapsed).flatten().tolist()
        raise DivergenceError(
            f"smc: the weights of all {members} particles collapsed (every log-weight is -inf "
            f"or NaN) at frame t={t} for trajectories {which}; the observations are impossible "
            "under the proposal (sigma too small, observations far from every particle, or "
            "diverged particles); use more particles, a guided proposal or a larger sigma",
            "smc",
            t,
            which,
        )


def _finite_or_impossible(log_values: torch.Tensor) -> torch.Tensor:
    """NaN and +inf log-weights (diverged particles) count as zero weight (-inf)."""
    impossible = torch.full((), -math.inf, dtype=log_values.dtype, device=log_values.device)
    return torch.where(torch.isnan(log_values) | (log_values == math.inf), impossible, log_values)


def _tempering_step(
    joint: torch.Tensor, likelihood: torch.Tensor, remaining: torch.Tensor, target: float
) -> torch.Tensor:
    """The largest exponent delta in (0, remaining] (bisection, per trajectory) whose
    reweighting ``joint + delta * likelihood`` keeps ESS >= target; ``(trajectories,)``.

    ``joint``, ``likelihood``: ``(members, trajectories)``; ``remaining``: ``(trajectories,)``.
    Where even the smallest bisected step falls below the target, that smallest step is taken
    (so every stage makes progress).
    """

    def ess(delta: torch.Tensor) -> torch.Tensor:
        staged = joint + delta * likelihood
        return effective_sample_size(staged, normalised=False)

    low = torch.zeros_like(remaining)
    high = remaining.clone()
    for _ in range(TEMPERING_BISECTIONS):
        middle = 0.5 * (low + high)
        good = ess(middle) >= target
        low = torch.where(good, middle, low)
        high = torch.where(good, high, middle)
    return torch.where(low > 0, low, high)


def _progressive_correction(
    window: torch.Tensor,
    joint: torch.Tensor,
    likelihood: torch.Tensor,
    problem: ProblemView,
    t: int,
    config: Any,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bring the observation of frame t in by stages (progressive correction, Oudjane & Musso
    2000; adaptive tempering, Jasra et al. 2011).

    While the full remaining likelihood p(y|x)^r would drop the ESS below
    ``tempering_ess * members``, a stage reweights by p(y|x)^delta (delta from
    :func:`_tempering_step`), resamples, regularises (:func:`regularisation_noise`) and
    re-evaluates the likelihood at the moved particles; r -= delta.  The last stage (the
    remaining exponent r) is left to the caller's ordinary reweighting and resampling.

    Args:
        window: ``(members, trajectories, k, C, *space)``, the new frame last.
        joint: log W_{t-1} + the non-likelihood increments, ``(members, trajectories)``.
        likelihood: log p(y_t | x_t) of the particles, ``(members, trajectories)``.

    Returns:
        ``(window, joint, earlier, stages)``: the moved particles, the log-weights including
        the remaining likelihood fraction, the summed log-normalisers of the earlier stages
        ``(trajectories,)`` (their sum with the last stage's is the evidence increment), and
        the number of earlier stages per trajectory ``(trajectories,)`` (long).
    """
    members, trajectories = joint.shape
    target = config.tempering_ess * members
    remaining = torch.ones(trajectories, dtype=joint.dtype, device=joint.device)
    earlier = torch.zeros_like(remaining)
    stages = torch.zeros(trajectories, dtype=torch.long, device=joint.device)
    keep = torch.arange(members, device=joint.device).unsqueeze(1)
    columns = torch.arange(trajectories, device=joint.device).unsqueeze(0)
    uniform = torch.full((), -math.log(members), dtype=joint.dtype, device=joint.device)
    likelihood = _finite_or_impossible(likelihood)
    plain = config.regularisation_kernel == "plain"
    for _ in range(MAX_TEMPERING_STAGES):
        full = joint + remaining * likelihood
        active = effective_sample_size(full) < target
        if not bool(active.any()):
            break
        delta = _tempering_step(joint, likelihood, remaining, target)
        staged = joint + delta * likelihood
        normaliser = torch.logsumexp(staged, dim=0)
        _check_collapse(normaliser, t, members)
        staged = staged - normaliser
        ancestors = resample_ancestors(staged, config.resampling, generator)
        ancestors = torch.where(active.unsqueeze(0), ancestors, keep)
        window = window[ancestors, columns] + regularisation_noise(
            window,
            staged,
            ancestors,
            active,
            config.regularisation * (delta.sqrt() if plain else 1.0),
            config.jitter_duplicates_only,
            generator,
            config.regularisation_kernel,
        )
        moved = problem.frame(t).log_likelihood(window[:, :, -1]).to(joint.dtype)
        likelihood = torch.where(active.unsqueeze(0), _finite_or_impossible(moved), likelihood)
        joint = torch.where(active.unsqueeze(0), uniform, joint)
        earlier = torch.where(active, earlier + normaliser, earlier)
        remaining = torch.where(active, remaining - delta, remaining)
        stages = stages + active.long()
    return window, joint + remaining * likelihood, earlier, stages


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
        resampling: str = option(
            "systematic",
            "The resampling scheme (module docstring).",
            kind=str,
            choices=RESAMPLING_METHODS,
        )
        regularisation: float = option(
            0.0,
            "The factor reg on Scott's bandwidth of the post-resampling kernel jitter "
            "(DAPPER's reg); 0 adds none.",
            low=0.0,
        )
        regularisation_kernel: str = option(
            "plain",
            "'plain' (DAPPER's jitter, which adds (reg h)^2 C to the covariance) or 'shrunk' "
            "(Liu & West 2001: the jitter plus a pull toward the weighted mean that keeps mean "
            "and covariance).",
            kind=str,
            choices=REGULARISATION_KERNELS,
        )
        jitter_duplicates_only: bool = option(
            True,
            "With the plain kernel, jitter only particles drawn more than once at resampling "
            "(DAPPER's nuj), else all (the shrunk kernel moves all).",
            kind=bool,
        )
        initial_spread: float = option(
            0.0,
            "Std of Gaussian perturbations added by init to the context of every particle, as "
            "enkf's: with deterministic dynamics and no process_noise the particles would "
            "otherwise stay identical.",
            low=0.0,
        )
        proposal_inflation: float = option(
            1.0,
            "Variance factor lambda >= 1 (DAPPER's qroot) of the process_noise jitter in the "
            "proposal, corrected exactly in the weights; 1 is the plain jitter. Needs "
            "process_noise > 0.",
            low=1.0,
        )
        tempering_ess: float = option(
            0.0,
            "In [0, 1); > 0 brings each observation in by stages of progressive correction, "
            "each keeping ESS >= tempering_ess * members, with resampling and regularisation "
            "between stages (needs regularisation > 0); 0 reweights by the whole likelihood "
            "at once.",
            low=0.0,
            high=1.0,
            high_open=True,
        )

        def __post_init__(self) -> None:
            validate_config(self)
            lookahead = getattr(self.proposal, "lookahead", 0)
            if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 0:
                raise TypeError(
                    f"SMC.Config.proposal.lookahead must be an int >= 0, got {lookahead!r}"
                )
            if self.tempering_ess > 0 and self.regularisation == 0:
                raise ValueError(
                    "SMC.Config.tempering_ess > 0 moves the particles between stages by "
                    "regularisation: set regularisation > 0"
                )
            if self.proposal_inflation != 1.0 and self.process_noise == 0.0:
                raise ValueError(
                    "SMC.Config.proposal_inflation inflates the process_noise jitter: set "
                    "process_noise > 0"
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
        if config.initial_spread > 0:
            window = window + config.initial_spread * torch.randn(
                window.shape, generator=generator, dtype=window.dtype, device=window.device
            )
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
            "tempering_stages": (),
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
        energy of the guided proposal, zeros for bootstrap), ``tempering_stages`` (long: the
        progressive-correction stages before the last one, 0 without tempering; ``ess`` is
        then the last stage's); ``resample_count`` is the running number of resampling
        events per trajectory (the stages' resamplings not included).

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
            # Incremental log-weights (members, trajectories).
            increment = torch.zeros(members, trajectories, dtype=frame.dtype, device=frame.device)
            if config.process_noise > 0:
                frame, correction = _jitter(frame, config, generator)
                if correction is not None:
                    increment = increment + correction
            tempered = None  # the likelihood brought in by stages (progressive correction)
            observation = problem.frame(t)
            if observation is not None:
                frame_likelihood = observation.log_likelihood(frame).to(frame.dtype)
                if config.tempering_ess > 0:
                    tempered = frame_likelihood
                else:
                    increment = increment + frame_likelihood
            if guidance is not None and prop.log_ratio is not None:
                increment = increment - prop.log_ratio.detach().to(frame.dtype)
            increment = _finite_or_impossible(increment)
            previous = state.log_weights
            if previous is None:
                previous = torch.full_like(increment, -math.log(members))
            joint = previous.to(frame.dtype) + increment
            window = torch.cat([state.window[:, :, 1:], frame.unsqueeze(2)], dim=2)
            stages = torch.zeros(trajectories, dtype=torch.long, device=frame.device)
            if tempered is not None:
                window, joint, earlier, stages = _progressive_correction(
                    window, joint, tempered, problem, t, config, generator
                )
                log_normaliser = torch.logsumexp(joint, dim=0) + earlier
            else:
                log_normaliser = torch.logsumexp(joint, dim=0)  # log sum_i W_{t-1}^i w_t^i
            _check_collapse(log_normaliser, t, members)
            log_weights = joint - torch.logsumexp(joint, dim=0)
            ess = effective_sample_size(log_weights, normalised=True)
            resample = ess < config.ess_threshold * members
            if bool(resample.any()):
                ancestors = resample_ancestors(log_weights, config.resampling, generator)
                keep = torch.arange(members, device=ancestors.device).unsqueeze(1)
                ancestors = torch.where(resample.unsqueeze(0), ancestors, keep)
                columns = torch.arange(trajectories, device=ancestors.device).unsqueeze(0)
                before = window
                window = window[ancestors, columns]
                if config.regularisation > 0:
                    window = window + regularisation_noise(
                        before,
                        log_weights,
                        ancestors,
                        resample,
                        config.regularisation,
                        config.jitter_duplicates_only,
                        generator,
                        config.regularisation_kernel,
                    )
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
                ess=ess,
                resampled=resample,
                log_evidence=running,
                log_weights=log_weights,
                kl=kl,
                tempering_stages=stages,
            )
            .with_diagnostics(resample_count=resample_count)
            .replace(
                window=window,
                frames=(*state.frames, emitted),
                log_weights=log_weights,
                vjps=state.vjps + vjps,
            )
        )
