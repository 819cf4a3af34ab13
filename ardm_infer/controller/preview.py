"""The preview buffer ("active observation selector") of CA-ARDM (arXiv 2510.06637).

At physical step t the ARDM generates frame index t of the horizon (0-based, as in
``Problem.observation[:, t]``), i.e. the physical time t_phys + 1 after the last frame it is
conditioned on.  The controller of that step sees every observation of the window

    frames t, t + 1, ..., t + Lambda - 1     (physical times (t_phys, t_phys + Lambda]),

as triplets (y_j lifted to the full grid with zeros where unobserved, mask M_j, offset
j - t_phys in 1..Lambda) -- docs/design.md §2, "Preview buffer".  Frames beyond the horizon and
unobserved points carry mask 0 and y 0.  Nothing beyond the window is ever read: the tensors
below are built from ``observation[:, t : t + Lambda]`` only, so inference stays causal in
the sense of the paper (a fixed, finite look-ahead of Lambda frames).

Tensor form: ``y`` and ``mask`` are ``(batch, Lambda, channels, *space)`` (float, the mask
0./1.), ``offset`` is ``(Lambda,)`` (long, 1..Lambda).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Preview", "preview_window"]


@dataclass(frozen=True)
class Preview:
    """The observations a controller may see at one physical step.

    Attributes:
        y: lifted observations times their mask, ``(batch, Lambda, channels, *space)``.
        mask: observation masks as floats in {0, 1}, ``(batch, Lambda, channels, *space)``.
        offset: physical-time offsets j - t_phys of the window's frames, ``(Lambda,)``
            = ``1, ..., Lambda`` (offset 1 is the frame being generated).
    """

    y: torch.Tensor
    mask: torch.Tensor
    offset: torch.Tensor

    @property
    def window(self) -> int:
        """Lambda."""
        return self.y.shape[1]

    def any_observed(self) -> torch.Tensor:
        """Whether each batch element has at least one observation in the window, ``(batch,)``."""
        return self.mask.flatten(1).amax(1) > 0


def preview_window(observation: torch.Tensor, mask: torch.Tensor, t: int, window: int) -> Preview:
    """The preview buffer of physical step ``t`` (frame index t of the horizon).

    Args:
        observation: lifted observations ``(batch, horizon, channels, *space)``.
        mask: bool (or 0/1) ``(horizon, channels, *space)`` shared by the batch, or
            ``(batch, horizon, channels, *space)``.
        t: the frame being generated, ``0 <= t``; frames ``t .. t + window - 1`` are read.
        window: Lambda >= 1.

    Returns:
        :class:`Preview` with ``y = M * observation`` and ``M`` of the frames
        ``t .. t + window - 1``, zero-padded past the horizon, each
        ``(batch, window, channels, *space)`` in the observation's dtype and device.
    """
    if window < 1:
        raise ValueError(f"the preview window Lambda must be >= 1, got {window}")
    if t < 0:
        raise ValueError(f"frame index t must be >= 0, got {t}")
    if observation.ndim < 4:
        raise ValueError(
            "observation must be (batch, horizon, channels, *space); "
            f"got {tuple(observation.shape)}"
        )
    batch, horizon = observation.shape[:2]
    frame = tuple(observation.shape[2:])
    if mask.ndim == observation.ndim - 1:
        mask = mask.unsqueeze(0)
    if mask.ndim != observation.ndim or tuple(mask.shape[1:]) != (horizon, *frame):
        raise ValueError(
            f"mask must be (horizon, *frame) or (batch, horizon, *frame) with horizon "
            f"{horizon} and frame {frame}; got {tuple(mask.shape)}"
        )
    stop = min(t + window, horizon)
    y = observation[:, t:stop]
    m = mask[:, t:stop].to(device=observation.device, dtype=observation.dtype)
    m = m.expand(batch, *m.shape[1:])
    y = y * m  # zero where unobserved, whatever the lifted array holds there
    missing = window - y.shape[1]
    if missing > 0:  # beyond the horizon: nothing observed
        pad = (0, 0) * len(frame) + (0, missing)
        y = F.pad(y, pad)
        m = F.pad(m, pad)
    offset = torch.arange(1, window + 1, device=observation.device)
    return Preview(y=y.contiguous(), mask=m.contiguous(), offset=offset)
