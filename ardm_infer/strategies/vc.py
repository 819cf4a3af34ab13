"""``vc``: variational control, the control objective of docs/design.md §2 optimised per instance.

Over a window of ``window`` frames starting at t, with controls u_{j,s} for every frame j,
sub-step s and batch element (members x trajectories), minimise

    J(u) = sum_j l(y_j, x_j) + sum_{j,s} w_s l(y_j, x0_hat_{j,s}) + beta * sum_{j,s} KL_{j,s},
    l(y, x) = |M (y - x)|^2 / (2 sigma_y^2),    KL_{j,s} = |u_{j,s}|^2 / (2 tau_s^2)

by ``iterations`` L-BFGS (or Adam) iterations, back-propagating through the whole window
rollout with the sampler noise held fixed (common random numbers: each window draws one seed
from the generator, and every iteration and the final rollout reuse it).  Controls are parameterised
as u = tau_s v, so KL = |v|^2 / 2.  The optimised window is then emitted frame by frame and
the next window is warm-started from the previous one's controls.  With beta = 1 and w = 0
minimising J is minimising KL(Q^u || posterior path measure) (docs/design.md §2); Pandey et al.
(2025) use this test-time optimisation as the per-instance counterpart of an amortised
controller.  Windows without observations are not optimised (the optimum is u = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..guidance import SubStepState
from ..observe import observation_cost
from ..process import Process
from .base import (
    Problem,
    StrategyState,
    flat,
    initial_window,
    register,
    require_guided_ardm,
    tile_members,
    unflat,
)


class _WindowControls:
    """Guidance returning u = tau_s v[j, S - s] and recording the arrival costs."""

    needs_grad = False

    def __init__(self, v, arrival_weight, observation, mask, sigma, observed):
        self.v = v  # (window, S, batch, C, *space)
        self.arrival_weight = arrival_weight
        self.observation = observation  # (window, batch, C, *space)
        self.mask = mask
        self.sigma = sigma
        self.observed = observed  # list[bool] per frame of the window
        self.j = 0
        self.arrival = []

    def control(self, state: SubStepState) -> torch.Tensor:
        j = self.j
        if self.arrival_weight > 0 and self.observed[j]:
            cost = observation_cost(
                self.observation[j],
                state.x0_hat,
                self.mask[j],
                self.sigma,
                frame_ndim=state.x0_hat.ndim - 1,
            )
            self.arrival.append(self.arrival_weight * cost)
        return state.tau * self.v[j, state.substeps - state.substep]


@register
class VariationalControl:
    """Per-instance optimisation of the sub-step controls over a preview window."""

    name = "vc"

    @dataclass(frozen=True)
    class Config:
        """Attributes:
        window: frames per optimisation window (Lambda).
        iterations: optimiser iterations per window (M).
        optimiser: ``"lbfgs"`` (default; strong-Wolfe line search, so the step adapts to
            the curvature of J and stops when the gradient vanishes) or ``"adam"``.  Adam's
            sign-like steps keep jittering v by about ``learning_rate`` even where the
            gradient is ~0 (e.g. sigma_y -> infinity), which adds spurious control energy.
        learning_rate: Adam step size on v = u / tau (unused by L-BFGS).
        beta: weight of the KL term.
        arrival_weight: w_s, the same for every sub-step (0 = terminal cost only).
        """

        window: int = 4
        iterations: int = 20
        optimiser: str = "lbfgs"
        learning_rate: float = 0.1
        beta: float = 1.0
        arrival_weight: float = 0.0

        def __post_init__(self) -> None:
            if self.window < 1 or self.iterations < 0:
                raise ValueError("window must be >= 1 and iterations >= 0")
            if self.optimiser not in ("lbfgs", "adam"):
                raise ValueError(f"optimiser must be 'lbfgs' or 'adam', got {self.optimiser!r}")
            if self.beta < 0 or self.arrival_weight < 0:
                raise ValueError("beta and arrival_weight must be >= 0")

    def init(
        self,
        process: Process,
        problem: Problem,
        members: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        require_guided_ardm(process, "vc", "optimises sub-step controls")
        state = StrategyState(window=initial_window(problem, members, process.context_length))
        state.diagnostics.update(iterations=[], objective=[], kl=[])
        return state

    def step(
        self,
        process: Process,
        problem: Problem,
        state: StrategyState,
        t: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        pending = state.extra.get("pending", [])
        if not pending:
            pending = self._solve_window(process, problem, state, t, config, generator)
        frame, kl = pending.pop(0)
        state.extra["pending"] = pending
        state.diagnostics["kl"].append(kl)
        state.push(frame)
        return state

    def _rollout(self, process, window0, members, seed, guidance, frames):
        """Run ``frames`` frames; returns (frames list, kl list) with graph if grad enabled."""
        g = torch.Generator(device=window0.device).manual_seed(seed)
        k = process.context_length
        ctx = flat(window0[:, :, -k:])
        out, kls = [], []
        for j in range(frames):
            guidance.j = j
            res = process.step_frame(ctx, g, guidance=guidance, frame=j)
            out.append(res.frame)
            kls.append(res.kl)
            ctx = torch.cat([ctx[:, 1:], res.frame.unsqueeze(1)], dim=1)
        return out, kls

    def _solve_window(self, process, problem, state, t, config, generator):
        members = state.window.shape[0]
        frames = min(config.window, problem.horizon - t)
        S = process.schedule.substeps
        batch = members * problem.trajectories
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        observed = [problem.observed(t + j) for j in range(frames)]
        obs = torch.stack(
            [tile_members(problem.observation[:, t + j], members) for j in range(frames)]
        )
        mask = torch.stack([tile_members(problem.mask_at(t + j), members) for j in range(frames)])
        shape = (config.window, S, batch, *problem.frame_shape)
        previous = state.extra.get("controls")
        v0 = previous if previous is not None and previous.shape == shape else None
        dtype = state.window.dtype
        v = (
            v0.clone()
            if v0 is not None
            else torch.zeros(shape, dtype=dtype, device=state.window.device)
        )
        v = v[:frames].clone().requires_grad_(True)
        iterations = config.iterations if any(observed) else 0
        evaluations = 0
        last = [float("nan")]

        def closure():
            nonlocal evaluations
            evaluations += 1
            optimiser.zero_grad()
            guide = _WindowControls(v, config.arrival_weight, obs, mask, problem.sigma, observed)
            with torch.enable_grad():
                out, kls = self._rollout(process, state.window, members, seed, guide, frames)
                terminal = sum(
                    observation_cost(
                        obs[j], out[j], mask[j], problem.sigma, frame_ndim=len(problem.frame_shape)
                    )
                    for j in range(frames)
                    if observed[j]
                )
                arrival = sum(guide.arrival) if guide.arrival else 0.0
                objective = terminal + arrival + config.beta * sum(kls)  # (batch,)
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
        state.vjps += batch * frames * S * evaluations
        objective_value = last[0]
        guide = _WindowControls(v.detach(), 0.0, obs, mask, problem.sigma, observed)
        with torch.no_grad():
            out, kls = self._rollout(process, state.window, members, seed, guide, frames)
        stored = torch.zeros(shape, dtype=dtype, device=state.window.device)
        stored[:frames] = v.detach()
        state.extra["controls"] = stored
        state.diagnostics["iterations"].append(evaluations)
        state.diagnostics["objective"].append(objective_value)
        return [(unflat(f, members), unflat(kl, members)) for f, kl in zip(out, kls, strict=True)]
