"""``controller``: CA-ARDM, one causal rollout with a trained amortised controller.

At every frame t the controller sees the preview buffer of frames t..t+Lambda-1
(:func:`ardm_infer.controller.preview_window`) and injects, at every sub-step s,

    u_s = tau_s f_psi(z_s, sigma_s, x0_hat, context, innovation, preview),
    KL_s = |u_s|^2 / (2 tau_s^2) = |f_psi|^2 / 2,

the amortised minimiser of the control objective J of docs/design.md §2 (trained offline by
:func:`ardm_infer.controller.train_controller`; arXiv 2510.06637).  Inference is one rollout
of the ARDM in ``torch.inference_mode()``, no gradients, plus one small network evaluation
per sub-step (none at all while the preview holds no observation).  The control energy of
every frame is recorded in ``diagnostics["kl"]`` (``(members, trajectories)`` per frame).

:func:`controller_proposal` turns a controller into a proposal factory for ``smc``
(``SMC.Config(proposal=controller_proposal(net))``); the discrete-Girsanov path weight
reported by the kernel keeps SMC exact whatever the controller does, including its use of
the observations of later frames in the preview (they are data, fixed during the run).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..ardm.pretrained import CHECKPOINT_DIR, SHIPPED
from ..controller.artifact import load_controller
from ..controller.network import Controller, ControllerGuidance
from ..controller.preview import preview_window
from ..process import Process
from ..soc.rollouts import ScaledGuidance
from .base import (
    ProblemView,
    StrategyState,
    initial_window,
    propagate,
    register,
    require_guided_ardm,
    require_mask_observations,
)
from .config import option, validate_config

__all__ = ["ControllerStrategy", "controller_proposal", "resolve_controller"]

_LOADED: dict[tuple[str, int, int], Controller] = {}


def resolve_controller(
    controller: Controller | str | Path | None, device: torch.device | None = None
) -> Controller:
    """A :class:`Controller` from a network, a shipped name or an artifact path.

    ``"ks"`` / ``"kolmogorov"`` name the shipped controllers
    ``ardm_infer/checkpoints/controller-<pde>.safetensors``; any other string is a path.
    Artifacts are verified (sha256) and loaded once per file version.  A network on another
    device than ``device`` is copied there (the caller's object is not moved).  ``None``
    raises ``ValueError`` explaining how to obtain a controller.
    """
    if controller is None:
        raise ValueError(
            "the controller strategy needs a trained controller: pass "
            "controller=<Controller network or path to a .safetensors artifact>, e.g. train "
            "one with ardm_infer.controller.train_controller (CLI: `ardm-infer "
            "train-controller --pde ks`) and pass controller='runs/.../controller-ks.safetensors'"
        )
    if isinstance(controller, str | Path):
        if isinstance(controller, str) and controller in SHIPPED:
            path = (CHECKPOINT_DIR / f"controller-{controller}.safetensors").resolve()
            if not path.is_file():
                raise FileNotFoundError(
                    f"no shipped controller at {path}; train one with `ardm-infer "
                    f"train-controller --pde {controller} --ship ardm_infer/checkpoints` from a "
                    "git checkout"
                )
        else:
            path = Path(controller).resolve()
        if not path.is_file():
            raise FileNotFoundError(
                f"controller={str(controller)!r}: no controller artifact at {path} (a path to a "
                f".safetensors artifact, or one of the shipped names {', '.join(SHIPPED)})"
            )
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in _LOADED:
            _LOADED[key] = load_controller(path)
        network = _LOADED[key]
    elif isinstance(controller, Controller):
        network = controller
    else:
        raise TypeError(
            f"controller must be a Controller or a path, got {type(controller).__name__}"
        )
    if device is not None:
        param = next(network.parameters())
        if param.device != device:
            network = copy.deepcopy(network).to(device)
    return network


def _check_fits(network: Controller, process: Process) -> None:
    cfg = network.config
    frame = tuple(process.frame_shape)
    if (
        len(frame) - 1 != cfg.dims
        or frame[0] != cfg.channels
        or process.context_length != cfg.context_frames
    ):
        raise ValueError(
            f"the controller (dims={cfg.dims}, channels={cfg.channels}, "
            f"context_frames={cfg.context_frames}) does not fit the process (frames {frame}, "
            f"context length {process.context_length})"
        )


@register
class ControllerStrategy:
    """One causal rollout with the amortised controller active (CA-ARDM)."""

    name = "controller"
    divergence_hint = (
        "the controller may not fit this ARDM or regime (see diagnostics['trained_for'])"
    )

    @dataclass(frozen=True)
    class Config:
        """Options of the controller strategy."""

        controller: Controller | str | Path | None = option(  # noqa: RUF009
            None,
            "A trained Controller, the path of its .safetensors artifact (card beside it, "
            'sha256 verified), or "ks" / "kolmogorov" for the shipped controllers; required.',
            kind=(Controller, str, Path),
            optional=True,
        )
        scale: float = option(
            1.0,
            "A constant on the controller's control, u_s -> scale * u_s (KL scales by "
            "scale^2); 1 is the trained controller, 0 the forecast.",
            low=0.0,
        )

        def __post_init__(self) -> None:
            validate_config(self)

    def lookahead(self, config: Config) -> int:
        """The preview buffer holds frames t .. t + Lambda - 1: Lambda - 1."""
        return resolve_controller(config.controller).config.preview - 1

    def init(
        self,
        process: Process,
        problem: ProblemView,
        members: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        require_guided_ardm(process, "controller", "steers denoising sub-steps")
        require_mask_observations(
            problem, "controller", "reads a preview of observations lifted to the grid"
        )
        network = resolve_controller(config.controller, problem.context.device)
        _check_fits(network, process)
        diagnostics = {"kl": (), "controller_calls": 0, "preview": network.config.preview}
        card = network.card
        if isinstance(card, dict) and "ardm" in card:
            diagnostics["trained_for"] = card["ardm"]
        return StrategyState(
            window=initial_window(problem, members, process.context_length),
            diagnostics=diagnostics,
            carry=_Carry(network),
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
        network = state.carry.network
        guidance = _preview_guidance(network, problem, t)
        steer = guidance if config.scale == 1.0 else ScaledGuidance(guidance, config.scale)
        with torch.inference_mode():
            prop = propagate(process, state.window, generator, guidance=steer, frame=t)
            state = state.push(prop.frame)
        calls = state.diagnostics["controller_calls"] + guidance.calls
        return state.record(kl=prop.kl).with_diagnostics(controller_calls=calls)


@dataclass(frozen=True)
class _Carry:
    """The controller strategy's carry: its network (on the problem's device)."""

    network: Controller


def _preview_guidance(network: Controller, problem: ProblemView, t: int) -> ControllerGuidance:
    """The controller's guidance at frame t, from the observations of frames t .. t + Lambda - 1."""
    lam = network.config.preview
    window = problem.window(t, t + lam)
    preview = preview_window(window.observation, window.mask, 0, lam)
    return ControllerGuidance(network, preview.y, preview.mask, problem.sigma)


class _ProposalFactory:
    """``(problem, t) -> ControllerGuidance`` for ``smc``; declares the preview look-ahead."""

    def __init__(self, network: Controller) -> None:
        self.base = network
        self.lookahead = network.config.preview - 1
        self.on_device: dict[torch.device, Controller] = {}

    def __call__(self, problem: ProblemView, t: int) -> ControllerGuidance:
        require_mask_observations(
            problem, "smc with a controller proposal", "reads a preview lifted to the grid"
        )
        device = problem.context.device
        if device not in self.on_device:
            self.on_device[device] = resolve_controller(self.base, device)
        return _preview_guidance(self.on_device[device], problem, t)


def controller_proposal(
    network: Controller | str | Path,
) -> Callable[[ProblemView, int], ControllerGuidance]:
    """A proposal factory ``(problem, t) -> Guidance`` for ``smc`` from a controller.

    The guidance tiles the per-trajectory preview over the members-major flattened batch
    ``(members * trajectories, C, *space)`` that SMC hands to the sampler.  The factory
    declares ``lookahead = Lambda - 1`` (its preview), which ``smc`` adopts as its own.

    Args:
        network: a trained :class:`~ardm_infer.controller.Controller` or an artifact path.
    """
    return _ProposalFactory(resolve_controller(network))
