"""How a small shift of the last sub-step, every frame, changes an ARDM rollout.

From the exact context of validation trajectories (never test), the ARDM is rolled
``--horizon`` frames with a shift u added to its last sub-step (the place where the
``output="state"`` controller acts, docs/design.md §2), for:

- ``forecast``: no shift;
- ``oracle``: u = 0.5 (truth - x0_hat), knowing the truth (what a perfect analysis buys);
- ``white``: u ~ N(0, a^2) independently at every point (``--amplitude`` a);
- ``constant``: u = a at every point (a spurious change of the frame's mean).

Both shipped systems conserve the spatial mean, so a control that shifts it accumulates;
this is why the ``analysis`` controller preset sets ``conserve_mean``.

    python benchmarks/diagnostics/shift_sensitivity.py [--pde ks] [--horizon 48]
        [--trajectories 8] [--amplitude 1e-3]

Prints the RMSE every 6 frames per case; last line
``pde=... horizon=... forecast=... oracle=... white=... constant=...`` (RMSE at the last
frame).
"""

from __future__ import annotations

import argparse

import torch

from ardm_infer.ardm.pretrained import load_ardm
from ardm_infer.data import default_data_config, load_dataset


class _LastSubStepShift:
    """A guidance adding ``shift(state, truth)`` at the last sub-step only."""

    needs_grad = False

    def __init__(self, shift, truth: torch.Tensor) -> None:
        self.shift, self.truth = shift, truth

    def control(self, state):
        return self.shift(state, self.truth) if state.substep == 1 else None


def rollout(ardm, frames: torch.Tensor, horizon: int, shift, seed: int = 1) -> list[float]:
    """Per-frame RMSE ``(horizon,)`` of one shifted rollout from the exact context."""
    k = ardm.context_length
    g = torch.Generator().manual_seed(seed)
    context = frames[:, :k].clone()
    errors = []
    for t in range(horizon):
        truth = frames[:, k + t]
        guidance = None if shift is None else _LastSubStepShift(shift, truth)
        frame = ardm.step_frame(context, g, guidance=guidance).frame
        errors.append(float((frame - truth).square().mean().sqrt()))
        context = torch.cat([context[:, 1:], frame[:, None]], 1)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pde", default="ks", choices=["ks", "kolmogorov"])
    parser.add_argument("--horizon", type=int, default=48)
    parser.add_argument("--trajectories", type=int, default=8)
    parser.add_argument("--amplitude", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    ardm = load_ardm(args.pde)
    data = load_dataset(default_data_config(args.pde))
    frames = data.normalise(data.val).float()[: args.trajectories]
    a = args.amplitude
    noise = torch.Generator().manual_seed(5)
    cases = {
        "forecast": None,
        "oracle": lambda st, truth: 0.5 * (truth - st.x0_hat),
        "white": lambda st, truth: a * torch.randn(st.z.shape, generator=noise),
        "constant": lambda st, truth: torch.full_like(st.z, a),
    }
    last = {}
    for name, shift in cases.items():
        errors = rollout(ardm, frames, args.horizon, shift)
        print(f"{name:9s}", " ".join(f"{e:.4f}" for e in errors[::6]), flush=True)
        last[name] = errors[-1]
    print(
        f"pde={args.pde} horizon={args.horizon} amplitude={a:g} "
        + " ".join(f"{n}={v:.4f}" for n, v in last.items())
    )


if __name__ == "__main__":
    main()
