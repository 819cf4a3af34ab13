"""``vc``: variational control, the control objective of docs/design.md §2 optimised per instance.

Over a window of ``window`` frames starting at t, with controls u_{j,s} for every frame j,
sub-step s and batch element (members x trajectories), minimise

    J(u) = sum_j l(y_j, x_j) + sum_{j,s} w_s l(y_j, x0_hat_{j,s}) + beta * sum_{j,s} KL_{j,s},
    l(y, x) = |y - H x|^2 / (2 sigma_y^2),    KL_{j,s} = |u_{j,s}|^2 / (2 tau_s^2)

by ``iterations`` L-BFGS (or Adam) iterations, back-propagating through the whole window
rollout with the sampler noise held fixed.  Controls are parameterised as u = tau_s v, so
KL = |v|^2 / 2.  The optimised window is then emitted frame by frame and the next window is
warm-started from the previous one's controls.  With beta = 1 and w = 0 minimising J is
minimising KL(Q^u || posterior path measure) (docs/design.md §2); Pandey et al. (2025) use
this test-time optimisation as the per-instance counterpart of an amortised controller.
Windows without observations are not optimised (the optimum is u = 0).

Common random numbers, within the window and with the other strategies: every rollout of a
window (each objective evaluation and the emitted one) replays the noise the run's generator
would draw next, from a copy of its state, and the generator is then advanced exactly as the
emitted rollout consumed it.  The emitted frames therefore use the same sampler noise as
``forecast``, ``dps`` or ``controller`` with the same generator (a window without
observations is the forecast, bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..guidance import SubStepState
from ..process import Process
from ..soc.objective import ArrivalCosts, objective_terms
from ..soc.rollouts import guided_rollout
from .base import (
    ProblemView,
    StrategyState,
    flat,
    initial_window,
    register,
    require_guided_ardm,
    unflat,
)
from .config import option, validate_config


class _WindowControls:
    """Guidance returning u = tau_s v[j, S - s] for window frame j = ``state.frame``."""

    needs_grad = False

    def __init__(self, v: torch.Tensor) -> None:
        self.v = v  # (window, S, batch, C, *space)

    def control(self, state: SubStepState) -> torch.Tensor:
        return state.tau * self.v[state.frame, state.substeps - state.substep]


@dataclass(frozen=True)
class _Carry:
    """What vc passes between frames.

    Attributes:
        pending: optimised frames of the current window not emitted yet, each
            ``(frame (members, trajectories, C, *space), kl (members, trajectories))``.
        controls: the last window's v ``(window, S, members * trajectories, C, *space)``
            (warm start of the next window), or None.
    """

    pending: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    controls: torch.Tensor | None = None


@register
class VariationalControl:
    """Per-instance optimisation of the sub-step controls over a preview window."""

    name = "vc"
    divergence_hint = (
        "use optimiser='lbfgs', fewer iterations or a smaller learning_rate; check beta"
    )

    @dataclass(frozen=True)
    class Config:
        """Options of variational control (module docstring)."""

        window: int = option(4, "Frames per optimisation window (Lambda).", kind=int, low=1)
        iterations: int = option(
            20, "Optimiser iterations per window (M); 0 emits the prior.", kind=int, low=0
        )
        optimiser: str = option(
            "lbfgs",
            '"lbfgs" (strong-Wolfe line search: the step adapts to the curvature of J and '
            'stops when the gradient vanishes) or "adam" (sign-like steps keep jittering v by '
            "about learning_rate where the gradient is ~0, which adds spurious control "
            "energy).",
            kind=str,
            choices=("lbfgs", "adam"),
        )
        learning_rate: float = option(
            0.1, "Adam step size on v = u / tau (unused by L-BFGS).", low=0.0, low_open=True
        )
        beta: float = option(1.0, "Weight of the KL term of J.", low=0.0)
        arrival_weight: float = option(
            0.0, "w_s, the same for every sub-step (0 = terminal cost only).", low=0.0
        )

        def __post_init__(self) -> None:
            validate_config(self)

    def lookahead(self, config: Config) -> int:
        """A window of ``window`` frames is optimised at its first frame: window - 1."""
        return config.window - 1

    def init(
        self,
        process: Process,
        problem: ProblemView,
        members: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        require_guided_ardm(process, "vc", "optimises sub-step controls")
        return StrategyState(
            window=initial_window(problem, members, process.context_length),
            diagnostics={"iterations": (), "objective": (), "kl": ()},
            carry=_Carry(),
        )

    def step(
        self,
        process: Process,
        problem: ProblemView,
        state: StrategyState,
        t: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        carry: _Carry = state.carry
        if not carry.pending:
            carry, iterations, objective, vjps = self._solve_window(
                process, problem, state, t, config, generator
            )
            state = state.record(iterations=iterations, objective=objective)
            state = state.replace(vjps=state.vjps + vjps)
        (frame, kl), *rest = carry.pending
        carry = _Carry(pending=tuple(rest), controls=carry.controls)
        return state.record(kl=kl).push(frame, carry=carry)

    def _solve_window(
        self,
        process: Process,
        problem: ProblemView,
        state: StrategyState,
        t: int,
        config: Config,
        generator: torch.Generator,
    ) -> tuple[_Carry, int, float, int]:
        """Optimise the window starting at frame t; returns the carry holding its frames,
        the number of objective evaluations, the last objective (batch mean) and the VJPs
        spent (per batch element)."""
        members = state.window.shape[0]
        frames = min(config.window, problem.horizon - t)
        S = process.schedule.substeps
        batch = members * problem.trajectories
        start = generator.get_state()  # every rollout of the window replays this noise
        observations = [problem.frame(t + j) for j in range(frames)]
        observations = [None if o is None else o.tile(members) for o in observations]
        shape = (config.window, S, batch, *problem.frame_shape)
        previous = state.carry.controls
        v0 = previous if previous is not None and previous.shape == shape else None
        dtype = state.window.dtype
        v = (
            v0.clone()
            if v0 is not None
            else torch.zeros(shape, dtype=dtype, device=state.window.device)
        )
        v = v[:frames].clone().requires_grad_(True)
        iterations = config.iterations if any(o is not None for o in observations) else 0
        evaluations = 0
        last = [float("nan")]
        context = flat(state.window)

        def rollout(controls: torch.Tensor, record_arrival: bool):
            g = torch.Generator(device=generator.device)
            g.set_state(start)
            guidance = _WindowControls(controls)
            arrival = None
            if record_arrival and config.arrival_weight > 0:
                arrival = ArrivalCosts(observations, config.arrival_weight)
                guidance = arrival.wrap(guidance)
            run = guided_rollout(process, context, frames, g, guidance, record=False)
            return run, arrival, g

        def closure():
            nonlocal evaluations
            evaluations += 1
            optimiser.zero_grad()
            with torch.enable_grad():
                run, arrival, _ = rollout(v, record_arrival=True)
                cost = None if arrival is None else arrival.total_like(run.kl)
                objective = objective_terms(
                    run, observations, beta=config.beta, arrival=cost
                ).objective  # (batch,)
                total = objective.sum()
                total.backward()
            last[0] = float(objective.detach().mean())
            return total

        if iterations > 0:
            if config.optimiser == "lbfgs":
                optimiser = torch.optim.LBFGS(
                    [v],
                    lr=1.0,
                    max_iter=iterations,
                    max_eval=2 * iterations,
                    history_size=10,
                    tolerance_grad=1e-9,
                    tolerance_change=1e-12,
                    line_search_fn="strong_wolfe",
                )
                optimiser.step(closure)
            else:
                optimiser = torch.optim.Adam([v], lr=config.learning_rate)
                for _ in range(iterations):
                    optimiser.step(closure)
        with torch.no_grad():
            run, _, used = rollout(v.detach(), record_arrival=False)
        generator.set_state(used.get_state())  # the emitted rollout consumed the stream
        stored = torch.zeros(shape, dtype=dtype, device=state.window.device)
        stored[:frames] = v.detach()
        pending = tuple(
            (unflat(run.frames[:, j], members), unflat(run.kl[:, j], members))
            for j in range(frames)
        )
        vjps = batch * frames * S * evaluations
        return _Carry(pending=pending, controls=stored), evaluations, last[0], vjps
