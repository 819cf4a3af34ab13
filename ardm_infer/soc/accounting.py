"""Path-space accounting of guided sub-steps, recomputed from the kernel's records.

One controlled sub-step s (S..1) of a physical frame is

    z_{s-1} = m(z_s, s, c) + u_s + tau_s xi,      xi ~ N(0, I),

and the controlled and prior kernels are Gaussians with the same covariance tau_s^2 I that
differ only in their means, so (discrete Girsanov, docs/design.md §2)

    log q_u(z_{s-1} | z_s) - log p(z_{s-1} | z_s) = (u_s . xi) / tau_s + |u_s|^2 / (2 tau_s^2),
    KL(q_u || p) per sub-step                     = |u_s|^2 / (2 tau_s^2).

Summed over the sub-steps and frames of a path these give its control energy and its
log-density ratio log dQ^u/dP.  The functions here recompute both from what the kernel
records (the controls, noises and tau_s of :class:`~ardm_infer.ardm.SubStepInfo`), so that
they can be checked against what the kernel reports.  Per-path results are ``(batch,)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..ardm.kernel import SubStepInfo
from ..ardm.process import FrameResult
from .rollouts import GuidedRollout

__all__ = [
    "PathRecords",
    "control_energy",
    "log_density_ratio",
    "substep_control_energy",
    "substep_log_ratio",
]


def _frame_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def substep_control_energy(info: SubStepInfo) -> torch.Tensor:
    """KL(q_u || p) of one recorded sub-step, recomputed: |u_s|^2 / (2 tau_s^2).

    Args:
        info: the kernel's record; ``info.control`` is ``(batch, channels, *space)``.

    Returns:
        ``(batch,)``; exactly 0 where u_s = 0 (also on a deterministic sub-step, tau_s = 0).
    """
    u = info.control
    squared = (u * u).sum(_frame_dims(u))
    if info.tau == 0:
        return torch.zeros_like(squared)
    return squared / (2 * info.tau**2)


def substep_log_ratio(info: SubStepInfo) -> torch.Tensor:
    """log q_u(z_{s-1}|z_s) - log p(z_{s-1}|z_s) of the step taken, recomputed.

    = (u_s . xi) / tau_s + |u_s|^2 / (2 tau_s^2), with xi = ``info.noise`` the noise drawn.

    Args:
        info: the kernel's record (control and noise ``(batch, channels, *space)``).

    Returns:
        ``(batch,)``.
    """
    u, noise = info.control, info.noise
    if info.tau == 0:
        return torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
    return (u * noise).sum(_frame_dims(u)) / info.tau + substep_control_energy(info)


PathRecords = SubStepInfo | FrameResult | GuidedRollout | Iterable


def _records(path: PathRecords) -> list[SubStepInfo]:
    """Flatten rollouts, frame results and nested iterables into sub-step records."""
    if isinstance(path, SubStepInfo):
        return [path]
    if isinstance(path, FrameResult):
        if not path.substeps:
            raise ValueError("the FrameResult holds no sub-step records: run it with record=True")
        return list(path.substeps)
    if isinstance(path, GuidedRollout):
        if not path.recorded:
            raise ValueError("the rollout holds no sub-step records: run it with record=True")
        return [info for frame in path.substeps for info in frame]
    out: list[SubStepInfo] = []
    for item in path:
        out.extend(_records(item))
    if not out:
        raise ValueError("no sub-step records in the path")
    return out


def control_energy(path: PathRecords) -> torch.Tensor:
    """Control energy (path KL) recomputed from the records: sum_s |u_s|^2 / (2 tau_s^2).

    Summed over every sub-step (and frame) of ``path``.  Equals KL(Q^u || P) of the path
    measures when the control is a function of the past only.

    Args:
        path: a :class:`SubStepInfo`, a recorded :class:`~ardm_infer.ardm.FrameResult`, a
            recorded :class:`GuidedRollout`, or an iterable of these.

    Returns:
        ``(batch,)``.
    """
    return torch.stack([substep_control_energy(i) for i in _records(path)]).sum(0)


def log_density_ratio(path: PathRecords) -> torch.Tensor:
    """log dQ^u/dP of the path taken, recomputed from the records (discrete Girsanov).

    sum_s (u_s . xi_s) / tau_s + |u_s|^2 / (2 tau_s^2).  Its mean under Q^u is the control
    energy (the cross term has mean 0), and exp(-it) has mean 1 under Q^u.

    Args:
        path: as in :func:`control_energy`.

    Returns:
        ``(batch,)``.
    """
    return torch.stack([substep_log_ratio(i) for i in _records(path)]).sum(0)
