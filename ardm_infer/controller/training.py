"""Offline training of the amortised controller (CA-ARDM, arXiv 2510.06637).

Objective (docs/design.md §2).  A training window is L consecutive frames x_1..x_L of a
(normalised) training trajectory, observed through that window's regime,
y_j = M_j (x_j + sigma_y xi_j).  The frozen ARDM is rolled over the L frames with the
controller active (the preview of frame j holds the window's frames j..j+Lambda-1, zero past
the window), and

    J(psi) = E[ sum_j l(y_j, x_j^u) + sum_{j,s} w l(y_j, x0_hat_{j,s}) + beta sum_{j,s} KL_{j,s} ],
    l(y, x) = |M (y - x)|^2 / (2 sigma_y^2),   KL_{j,s} = |u_{j,s}|^2 / (2 tau_s^2) = |f|^2 / 2

(per window, ``controlled_rollout``) is minimised over psi by back-propagating through the
rollout (reparameterised sampler noise) with Adam.  With beta = 1 and w = 0 this is
KL(Q^u || posterior path measure) minus the log-evidence; the paper (arXiv 2510.06637)
trains with beta = 0 plus Tweedie arrival costs (w > 0): both are parameters, and the control
energy (KL) is logged either way.  ``vc`` minimises the same J per instance; this is its
amortised counterpart.

Chains (:mod:`.chains`): the B windows of a step are the next windows of B persistent
on-policy chains, each started from a true context with its own regime, so the controller
also learns on the model's own drifted contexts.

Gradients and truncation.  The ARDM's parameters are frozen (``requires_grad_(False)``), but
the gradient flows through the denoiser into its *inputs*: from the cost of frame j through
x_j = z_0, every sub-step z_{s-1} = m(z_s) + u_s + tau_s xi (including
dm/dz_s = c_s I + (1 - c_s) dD/dz_s) and, unless ``detach_context``, through the context of
frame j + 1, so the controls of frame j are credited with the costs of the later frames of
the window (this is what makes the preview useful).  Truncation is at the window boundary:
the context a window starts from (true or carried over from the chain) is detached, so
backpropagation spans at most L frames x S sub-steps.  ``detach_context=True`` truncates
further, at every frame boundary (each frame's controls then see only that frame's costs).

Receding horizon.  At inference the controller of frame t sees frames t..t+Lambda-1; in
training the preview of window frame j is cut at the window's end (frames j..L-1), exactly
the information whose costs J charges to it.  Frame j = 0 of a window (L = Lambda) is the
inference situation; later frames teach the shorter look-aheads met near a horizon's end.

Regimes.  Either one fixed :class:`~ardm_infer.observe.Regime` or a
:class:`~ardm_infer.observe.RegimeDistribution` from which every chain draws its own
:class:`~ardm_infer.observe.Regime` at each restart (stride with a phase or random fraction,
temporal interval ``every`` with an offset, noise level sigma_y), so one controller is trained
across regimes: the mask and sigma_y are inputs of the network.  A chain's masks are its
regime's own (:meth:`~ardm_infer.observe.Regime.window_masks`): every training mask is one the
benchmark can name.  With ``every`` > L some windows hold no observation; the controller's
gating makes u = 0 there (the exact optimum of J) and the chain advances under the prior, as
at inference.

Validation: ``val_batches`` batches of B chains on held-out trajectories, each started from
the truth and rolled ``val_windows`` windows without gradients, with a fixed generator (the
same chains, regimes and noise at every evaluation); reported: J, its terms and the KL per
window (chain average) and the RMSE of the last window against the truth.

Reproducibility: parameters, chains, regimes, observation noise and sampler noise all come
from explicit generators seeded by ``ControllerTrainConfig.seed``.  Checkpoints, resume,
history and progress are the shared loop of :mod:`ardm_infer.training_loop` (the chains are
checkpointed with it); resuming reproduces an uninterrupted run exactly.  The artifact is
``<name>.safetensors`` plus a ``<name>.json`` card (configs, regimes, the ARDM it was trained
for, data identity, final losses, history, wall time, code version, sha256), bound and
verified by :mod:`.artifact`.

Shapes: data ``(trajectories, time, C, *space)``; a batch of windows has context
``(B, k, C, *space)``, truth/observation/mask ``(B, L, C, *space)``, sigma_y ``(B,)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..observe import Regime, RegimeDistribution, resolve_regimes
from ..training_loop import TrainingTask, card_fields, run_result, run_training
from .artifact import CONTROLLER_ARTIFACT_FORMAT, ardm_identity, load_controller, save_controller
from .chains import Chains
from .network import Controller, ControllerConfig
from .rollout import controlled_rollout

__all__ = [
    "CONTROLLER_ARTIFACT_FORMAT",
    "ControllerTrainConfig",
    "RegimeDistribution",
    "controlled_rollout",
    "controller_presets",
    "load_controller",
    "resolve_regimes",
    "save_controller",
    "train_controller",
]


# ---------------------------------------------------------------------------------------------
# Training config and presets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControllerTrainConfig:
    """Hyper-parameters of :func:`train_controller`.

    Attributes:
        steps: Adam steps.
        batch_size: windows per step.
        window: L, frames rolled out per window (None: the controller's preview Lambda).
        beta: weight of the control energy (KL) in J.
        arrival_weight: w, weight of the Tweedie arrival costs l(y_j, x0_hat_{j,s}) (the
            same at every sub-step; 0 = terminal cost only).
        detach_context: truncate backpropagation at every frame boundary (see module
            docstring); default False (truncation only at window boundaries).
        terminal: ``"observations"`` (the terminal cost of J, sum_j l(y_j, x_j)) or
            ``"truth"`` (offline only: sum_j |x_j - x*_j|^2 / (2 sigma_y^2) against the
            training trajectory's true frames x* over the whole state, every frame of the
            window).  The truth cost has no observation-noise floor in its gradient and
            weighs every regime by the full state, not by its number of observed points.
            ``"crps"`` (offline, ``members`` >= 2): the fair CRPS of each chain's ensemble
            against the true frames, over every point and frame, over sigma_y; a proper
            score of the ensemble, so it rewards a spread that matches the error.
        members: M, members per training chain (:class:`.chains.Chains`): the rollout batch
            is M x ``batch_size`` and a controller with ``ensemble_inputs`` sees each
            chain's ensemble statistics, as at inference.
        chain_reset: probability that a training chain restarts from a true context at a
            new random time before each window (1: every window starts from the truth; the
            mean chain length is L / chain_reset frames).
        regimes: ``"randomised"`` (:meth:`RegimeDistribution.randomised`), ``"presets"``
            (:meth:`RegimeDistribution.presets`) or a regime spec / preset name (a single
            regime).
        lr: peak learning rate; linear warm-up, then cosine decay to ``min_lr_ratio * lr``.
        warmup_steps, min_lr_ratio: the schedule (as for the ARDM).
        weight_decay: Adam weight decay (coupled; 0 by default).
        grad_clip: max global gradient norm of the loss J / (L * frame size) (0: none).
        adam_betas: Adam betas.
        val_every: validate every this many steps (0: only before and after training).
        val_batches: validation batches of ``batch_size`` held-out chains.
        val_windows: windows per validation chain (each chain starts from a true context
            and is rolled ``val_windows * L`` frames; fewer if the trajectories are short).
        checkpoint_every: checkpoint every this many steps (0: never).
        seed: seeds parameters, windows, regimes and noise; validation uses seed + 104729.
    """

    steps: int
    batch_size: int
    window: int | None = None
    beta: float = 1.0
    arrival_weight: float = 0.0
    detach_context: bool = False
    terminal: str = "observations"
    members: int = 1
    chain_reset: float = 1.0 / 16
    regimes: str = "randomised"
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    val_every: int = 100
    val_batches: int = 2
    val_windows: int = 4
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")
        if self.window is not None and self.window < 1:
            raise ValueError("window must be >= 1 (or None)")
        if self.beta < 0 or self.arrival_weight < 0:
            raise ValueError("beta and arrival_weight must be >= 0")
        if not self.lr > 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("lr must be > 0, weight_decay and grad_clip >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be in [0, 1]")
        if self.terminal not in ("observations", "truth", "crps"):
            raise ValueError(
                f"terminal must be 'observations', 'truth' or 'crps', got {self.terminal!r}"
            )
        if self.members < 1 or (self.terminal == "crps" and self.members < 2):
            raise ValueError("members must be >= 1, and >= 2 for terminal='crps'")
        if not 0.0 <= self.chain_reset <= 1.0:
            raise ValueError("chain_reset must be in [0, 1]")
        if self.val_windows < 1:
            raise ValueError("val_windows must be >= 1")
        for name in ("val_every", "val_batches", "checkpoint_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if len(self.adam_betas) != 2:
            raise ValueError("adam_betas needs 2 values")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ControllerTrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ControllerTrainConfig fields {sorted(unknown)}")
        return cls(**d)


def controller_presets(pde: str) -> dict[str, tuple[ControllerConfig, ControllerTrainConfig]]:
    """Named (network, training) configurations for the shipped ARDM of ``pde``.

    - ``"default"``: Lambda = L = 4 for the default ARDM (k = 2, ``Schedule()`` with S = 16
      sub-steps), chains of mean length L / chain_reset frames (KS 128, Kolmogorov 32:
      about the time the unguided forecast needs to drift to an error of order sigma_y),
      beta = 0.1 and w = 0.05 (between the paper's beta = 0 plus arrival costs and the
      exact beta = 1: in a 60-step KS trial on the sparse regime beta = 1 learned only
      tiny controls (validation RMSE after 96 frames 0.096 -> 0.093) while beta = 0.1,
      w = 0.05 reached 0.079 within 30 steps).  Regimes: Kolmogorov draws from the wide
      :meth:`RegimeDistribution.randomised` (450 steps); KS from
      :meth:`RegimeDistribution.presets` (400 steps), because on the wide distribution the
      densest, least noisy KS windows dominated the gradient and after 200 steps the
      controller was no better than the forecast (see :meth:`RegimeDistribution.presets`).
      Step times (torch 2.13, float32, one thread, idle core): 2.7-3.4 s for KS at 16
      windows, 4.6-5.3 s for Kolmogorov at 4 windows; a loaded machine is 2-4x slower.
      Per sub-step the controller costs 0.06x the denoiser's FLOPs (both PDEs) and, in
      wall time at one thread, 0.13-0.22x (KS, batch 64-16; overhead-bound small
      convolutions) and 0.09-0.11x (Kolmogorov).  The shipped controllers' cards record
      what was actually run (both were stopped at 300 steps; see the README).
    - ``"analysis"``: the default trunk with ``active_substeps=1``, ``output="state"``,
      ``conserve_mean``, trained with ``terminal="truth"``, ``detach_context=True``,
      beta = 0, w = 0 and lr 1e-3: an amortised analysis increment of the last sub-step
      (see :mod:`.network`), fitted frame by frame (with credit through the next frames'
      contexts, the first KS run's validation RMSE went 0.065 -> 1.26 in 50 steps).
      Experimental: no run of it is shipped (paper/controller_ablations.md).
    - ``"smoke"``: a tiny net and a few steps, for tests and CI.

    Args:
        pde: ``"ks"`` or ``"kolmogorov"``.

    Returns:
        ``{name: (ControllerConfig, ControllerTrainConfig)}``.
    """
    dims = {"ks": 1, "kolmogorov": 2}.get(pde)
    if dims is None:
        raise ValueError(f"unknown pde {pde!r}; expected 'ks' or 'kolmogorov'")
    smoke = (
        ControllerConfig(
            dims=dims,
            channels=1,
            context_frames=2,
            preview=2,
            width=8,
            blocks=2,
            dilations=(1, 2),
            embedding_dim=16,
            fourier_features=8,
            groups=4,
        ),
        ControllerTrainConfig(
            steps=6,
            batch_size=4,
            lr=2e-3,
            warmup_steps=2,
            val_every=3,
            val_batches=1,
            checkpoint_every=3,
        ),
    )
    if pde == "ks":
        default = (
            ControllerConfig(
                dims=1,
                channels=1,
                context_frames=2,
                preview=4,
                width=32,
                blocks=3,
                dilations=(1, 2, 4),
                patch_size=8,
            ),
            ControllerTrainConfig(
                steps=400,
                batch_size=16,
                regimes="presets",
                beta=0.1,
                arrival_weight=0.05,
                chain_reset=1.0 / 32,
                lr=2e-3,
                warmup_steps=50,
                val_every=100,
                val_batches=1,
                val_windows=24,
                checkpoint_every=50,
            ),
        )
    else:
        default = (
            ControllerConfig(
                dims=2,
                channels=1,
                context_frames=2,
                preview=4,
                width=16,
                blocks=4,
                dilations=(1, 2, 4, 4),
                patch_size=4,
            ),
            ControllerTrainConfig(
                steps=450,
                batch_size=4,
                beta=0.1,
                arrival_weight=0.05,
                chain_reset=1.0 / 8,
                lr=2e-3,
                warmup_steps=25,
                val_every=50,
                val_batches=1,
                val_windows=8,
                checkpoint_every=25,
            ),
        )
    # "analysis": the same trunk acting only on the last sub-step, its output the shift of the
    # frame in data units, trained against the true frames with beta = 0 (the paper's beta;
    # the KL is still logged).  Motivation: the controller issue's diagnostics (one frame is
    # nearly deterministic given its context; only the last sub-steps move it).
    net, train_cfg = default
    analysis = (
        ControllerConfig.from_dict(
            {**net.to_dict(), "active_substeps": 1, "output": "state", "conserve_mean": True}
        ),
        ControllerTrainConfig.from_dict(
            {
                **train_cfg.to_dict(),
                "terminal": "truth",
                "detach_context": True,
                "beta": 0.0,
                "arrival_weight": 0.0,
                "lr": 1e-3,
                "val_every": 50,
            }
        ),
    )
    return {"default": default, "analysis": analysis, "smoke": smoke}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _check_compatible(ardm: Any, config: ControllerConfig) -> None:
    frame = tuple(ardm.frame_shape)
    problems = []
    if len(frame) - 1 != config.dims:
        problems.append(f"{len(frame) - 1} spatial dims vs dims={config.dims}")
    if frame[0] != config.channels:
        problems.append(f"{frame[0]} channels vs channels={config.channels}")
    if ardm.context_length != config.context_frames:
        problems.append(
            f"context length {ardm.context_length} vs context_frames={config.context_frames}"
        )
    if any(n % config.patch_size for n in frame[1:]):
        problems.append(f"grid {frame[1:]} not a multiple of patch_size={config.patch_size}")
    if problems:
        raise ValueError(
            f"controller config does not fit the ARDM {getattr(ardm, 'name', '')}: "
            + "; ".join(problems)
        )


def _split_data(
    data: Any, validation_frames: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], str | None]:
    """(train, val, data identity, pde) in normalised float32 units."""
    if isinstance(data, torch.Tensor):
        frames = data.to(torch.float32)
        if validation_frames is not None:
            return frames, validation_frames.to(frames), {"data": "frames"}, None
        n = frames.shape[0]
        held = max(1, n // 10) if n >= 2 else 0
        val = frames[n - held :] if held else frames
        return frames[: n - held], val, {"data": "frames", "held_out": held}, None
    train = data.normalise(data.train).to(torch.float32)
    val = data.normalise(data.val).to(torch.float32)
    if validation_frames is not None:
        val = validation_frames.to(train)
    identity = {"data_key": data.config.key(), "data_config": data.config.to_dict()}
    return train, val, identity, data.config.pde


def train_controller(
    ardm: Any,
    data: Any,
    network_config: ControllerConfig,
    train_config: ControllerTrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    *,
    regimes: str | Regime | RegimeDistribution | None = None,
    validation_frames: torch.Tensor | None = None,
    name: str | None = None,
    device: str | torch.device | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train a controller for the frozen ``ardm`` and save it as an artifact.

    Args:
        ardm: the :class:`~ardm_infer.ardm.ARDM` to control (normalised units, eta > 0);
            its denoiser's parameters are set to ``requires_grad_(False)``.
        data: a :class:`ardm_infer.data.Dataset` (its train / val splits are normalised with
            ``data.normalise``) or normalised training frames ``(trajectories, time, C,
            *space)`` (then ``validation_frames`` or, by default, the last tenth of the
            trajectories -- at least one, unless there is only one -- is held out).
        network_config: the :class:`ControllerConfig` (must fit the ARDM).
        train_config: the :class:`ControllerTrainConfig`.
        out_dir: where the checkpoint and the artifact go.
        resume: continue from ``out_dir/checkpoint.safetensors`` if present (configs, regimes
            and ARDM identity must match, else ``ValueError``).
        progress: tqdm bar with J and KL.
        regimes: overrides ``train_config.regimes``: ``"randomised"``, a regime or spec, or a
            :class:`RegimeDistribution`.
        validation_frames: held-out normalised frames for validation.
        name: artifact name (default ``controller-<pde>`` or ``controller``).
        device: where to train (default: the device of the ARDM's parameters, else CPU).
        stop_after: checkpoint and return after this many total steps (time slicing).

    Returns:
        ``{"completed", "step", "name", "weights_path", "card_path", "final_train_objective",
        "final_val_objective", "final_val_kl", "wall_seconds", "history", "card"}``.
    """
    tc, cfg = train_config, network_config
    ardm.schedule.require_stochastic("controller training")
    _check_compatible(ardm, cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val, data_identity, pde = _split_data(data, validation_frames)
    name = name or (f"controller-{pde}" if pde else "controller")
    denoiser = ardm.denoiser
    if isinstance(denoiser, torch.nn.Module):
        denoiser.requires_grad_(False)
        first = next(denoiser.parameters(), None)
        default_device = first.device if first is not None else torch.device("cpu")
    else:
        default_device = torch.device("cpu")
    dev = torch.device(device) if device is not None else default_device
    train, val = train.to(dev), val.to(dev)
    frame_shape = tuple(ardm.frame_shape)
    if tuple(train.shape[2:]) != frame_shape:
        raise ValueError(f"data frames {tuple(train.shape[2:])} vs ARDM frames {frame_shape}")
    dist = resolve_regimes(regimes if regimes is not None else tc.regimes, frame_shape, pde)
    length = tc.window or cfg.preview
    k = ardm.context_length
    numel = math.prod(frame_shape) * length

    network = Controller(cfg, torch.Generator().manual_seed(tc.seed)).to(dev)
    optimizer = torch.optim.Adam(
        network.parameters(), lr=tc.lr, betas=tc.adam_betas, weight_decay=tc.weight_decay
    )
    generator = torch.Generator().manual_seed(tc.seed + 1)
    chains = Chains(tc.batch_size, train, k, tc.members)
    params = list(network.parameters())

    def rollout(window: tuple[Any, ...], detach_context: bool = False) -> dict[str, torch.Tensor]:
        context, truth, obs, mask, sigma, rg = window
        return controlled_rollout(
            ardm,
            network,
            context,
            obs,
            mask,
            sigma,
            rg,
            beta=tc.beta,
            arrival_weight=tc.arrival_weight,
            detach_context=detach_context,
            truth=truth,
            terminal=tc.terminal,
        )

    def train_step(step: int) -> dict[str, float]:
        window = chains.advance(train, length, dist, tc.chain_reset, generator)
        with torch.enable_grad():
            res = rollout(window, tc.detach_context)
            objective = res["objective"].mean()
            optimizer.zero_grad(set_to_none=True)
            if objective.requires_grad:  # else no window of the batch holds an observation:
                (objective / numel).backward()  # u = 0 everywhere, nothing to learn
        chains.push(res["frames"])
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        optimizer.step()
        return {
            "objective": float(objective.detach()),
            "kl": float(res["kl"].detach().mean()),
            "terminal": float(res["terminal"].detach().mean()),
        }

    keys = ("objective", "terminal", "arrival", "kl", "rmse")

    def validate() -> dict[str, float | None]:
        windows = min(tc.val_windows, (val.shape[1] - k) // length) if val.shape[0] else 0
        if tc.val_batches == 0 or windows < 1:
            return {f"val_{key}": None for key in keys}
        g = torch.Generator().manual_seed(tc.seed + 104_729)
        sums = dict.fromkeys(keys, 0.0)
        with torch.no_grad():
            for _ in range(tc.val_batches):
                val_chains = Chains(tc.batch_size, val, k, tc.members)
                for _ in range(windows):
                    window = val_chains.advance(val, length, dist, 0.0, g, span=windows * length)
                    res = rollout(window)
                    val_chains.push(res["frames"])
                    for key in keys[:4]:
                        sums[key] += float(res[key].mean()) / windows
                # RMSE of the last window of the chains (ensemble mean): after windows * L
                # frames
                truth = window[1]
                mean = res["frames"].reshape(tc.members, *truth.shape).mean(0)
                sums["rmse"] += float((mean - truth).square().mean().sqrt())
        return {f"val_{key}": v / tc.val_batches for key, v in sums.items()}

    identity = {
        "name": name,
        "model_config": cfg.to_dict(),
        "training_config": tc.to_dict(),
        "regimes": dist.to_dict(),
        "ardm": ardm_identity(ardm),
        **data_identity,
    }
    task = TrainingTask(
        name=name,
        out_dir=out_dir,
        identity=identity,
        config=tc,
        optimizer=optimizer,
        modules={"model": network},
        generators={"train": generator},
        metrics=("objective", "kl", "terminal"),
        train_step=train_step,
        validate=validate,
        progress_fields=lambda m, lr: {"J": f"{m['objective']:.3g}", "KL": f"{m['kl']:.3g}"},
        headline="val_objective",
        extra_tensors=chains.tensors,
        extra_state=chains.state,
        restore_extra=chains.load,
    )
    network.train()
    state = run_training(task, resume=resume, progress=progress, stop_after=stop_after)
    network.eval()
    history = state["history"]
    trained = [h for h in history if h["train_objective"] is not None]
    finals = {
        "final_train_objective": trained[-1]["train_objective"] if trained else None,
        "final_val_objective": history[-1]["val_objective"],
        "final_val_kl": history[-1]["val_kl"],
    }
    weights_path = out_dir / f"{name}.safetensors"
    card = None
    if state["completed"]:
        fields = {
            **card_fields(state, dev),
            **data_identity,
            "regimes": dist.to_dict(),
            "ardm": ardm_identity(ardm),
            **finals,
            "final_train_kl": trained[-1]["train_kl"] if trained else None,
            "final_val_rmse": history[-1]["val_rmse"],
            "initial_val_objective": history[0]["val_objective"],
            "initial_val_rmse": history[0]["val_rmse"],
        }
        card = save_controller(network.to("cpu"), fields, weights_path)
        network.requires_grad_(False)
        network.card = card
    return {**run_result(state, weights_path, card, finals), "network": network}
