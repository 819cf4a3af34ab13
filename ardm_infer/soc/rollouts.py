"""The one guided rollout of an ARDM over several physical frames (docs/design.md §2).

Every multi-frame guided loop of the library (the SOC checks, ``vc``'s window optimisation,
the controller's training windows) is :func:`guided_rollout`; a single frame of an ensemble
goes through :func:`ardm_infer.strategies.base.propagate`.

Shapes: contexts ``(batch, k, channels, *space)``, a rollout's frames
``(batch, T, channels, *space)``, per-frame scalars ``(batch, T)``.  The batch holds
independent draws of the path (members x trajectories, flattened members-major).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..ardm.kernel import SubStepInfo
from ..ardm.process import FrameResult
from ..guidance import Guidance, SubStepState
from ..process import GuidedProcess

__all__ = ["GuidedRollout", "ScaledGuidance", "guided_rollout"]


@dataclass
class GuidedRollout:
    """A guided rollout of an ARDM over ``T`` physical frames.

    Attributes:
        frames: the emitted frames z_0, ``(batch, T, channels, *space)``.
        kl: control energy per frame *as reported by the kernel*,
            sum_s |u_s|^2 / (2 tau_s^2), ``(batch, T)``.
        log_ratio: log q_u - log p of each frame's sub-step path *as reported by the
            kernel*, ``(batch, T)``.
        substeps: per frame, the kernel's :class:`~ardm_infer.ardm.SubStepInfo` records
            (s = S first); empty lists when the rollout was not recorded.
    """

    frames: torch.Tensor
    kl: torch.Tensor
    log_ratio: torch.Tensor
    substeps: list[list[SubStepInfo]] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        recorded = sum(len(frame) for frame in self.substeps)
        return (
            f"GuidedRollout(frames={tuple(self.frames.shape)}, kl={tuple(self.kl.shape)}, "
            f"log_ratio={tuple(self.log_ratio.shape)}, recorded_substeps={recorded})"
        )

    @property
    def recorded(self) -> bool:
        """Whether every frame kept its sub-step records (``record=True``)."""
        return bool(self.substeps) and all(self.substeps)


def guided_rollout(
    ardm: GuidedProcess,
    context: torch.Tensor,
    frames: int,
    generator: torch.Generator,
    guidance: Guidance | Sequence[Guidance | None] | None = None,
    record: bool = True,
    *,
    detach_context: bool = False,
) -> GuidedRollout:
    """Run ``frames`` guided physical steps of ``ardm`` autoregressively.

    The only randomness is ``generator`` (the initial latent and one xi per sub-step, in the
    kernel's order), so the same generator state with and without a (zero) guidance gives the
    same noises.  Gradients flow through the whole rollout when grad is enabled (the
    controls of ``vc``, the controller's parameters in training).

    Args:
        ardm: the :class:`~ardm_infer.ardm.ARDM` (any
            :class:`~ardm_infer.process.GuidedProcess`).
        context: ``(batch, >= k, channels, *space)``; the last k frames condition frame 0.
        frames: T >= 1.
        generator: the source of randomness (required: never the global RNG).
        guidance: one :class:`~ardm_infer.guidance.Guidance` for every frame, a sequence of
            T guidances (None = unguided frame), or None (the prior sampler).  Frame j is
            generated with ``frame=j`` (``SubStepState.frame``).
        record: keep the per-sub-step records (needed by
            :func:`~ardm_infer.soc.control_energy`, :func:`~ardm_infer.soc.log_density_ratio`
            and recorded arrival costs).
        detach_context: condition each frame on detached copies of the generated frames
            (truncated back-propagation: gradients stop at the context).

    Returns:
        :class:`GuidedRollout` with frames ``(batch, T, channels, *space)`` and per-frame
        ``kl`` and ``log_ratio`` ``(batch, T)``.
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError("guided_rollout needs an explicit torch.Generator (never the global RNG)")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if guidance is None or isinstance(guidance, Guidance):
        guidances: list[Guidance | None] = [guidance] * frames
    else:
        guidances = list(guidance)
        if len(guidances) != frames:
            raise ValueError(f"need one guidance per frame ({frames}), got {len(guidances)}")
    k = ardm.context_length
    window = context[:, -k:]
    out, kls, ratios, records = [], [], [], []
    for j in range(frames):  # frames are sequential by nature
        result: FrameResult = ardm.step_frame(
            window, generator, guidance=guidances[j], frame=j, record=record
        )
        out.append(result.frame)
        kls.append(result.kl)
        ratios.append(result.log_ratio)
        records.append(result.substeps)
        following = result.frame.detach() if detach_context else result.frame
        window = torch.cat([window[:, 1:], following.unsqueeze(1)], dim=1)
    return GuidedRollout(
        frames=torch.stack(out, 1),
        kl=torch.stack(kls, 1),
        log_ratio=torch.stack(ratios, 1),
        substeps=records,
    )


class ScaledGuidance:
    """The control of another guidance times a constant: u_s -> scale * u_s.

    KL scales by scale^2 along a fixed path; ``scale = 0`` is the prior sampler (a zero
    control, bit for bit the unguided sample under the same generator).

    Args:
        guidance: the :class:`~ardm_infer.guidance.Guidance` to scale.
        scale: the constant lambda.
    """

    def __init__(self, guidance: Guidance, scale: float) -> None:
        self.guidance = guidance
        self.scale = float(scale)
        self.needs_grad = bool(getattr(guidance, "needs_grad", False))

    def control(self, state: SubStepState) -> torch.Tensor | None:
        """``scale * guidance.control(state)`` ``(batch, channels, *space)`` (None stays None)."""
        u = self.guidance.control(state)
        return None if u is None else self.scale * u
