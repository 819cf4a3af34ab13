"""One resumable training loop, shared by every trainer (ARDM denoiser, controller).

A trainer describes its run as a :class:`TrainingTask` -- its identity, its modules,
optimiser and generators, and three functions: one optimiser step (its loss and data), a
validation, and the progress-bar fields -- and :func:`run_training` does the rest, the same
way for all:

- run state: step, history, running sums of the step metrics since the last history entry,
  wall time, schedule changes (JSON);
- resume: ``out_dir/checkpoint.safetensors`` is restored exactly (modules, optimiser,
  generators, the trainer's extra tensors and state) if its identity equals the task's; the
  only change allowed is the number of steps (the run is extended or shortened, recorded in
  ``schedule_changes``; the cosine schedule follows the new total from there on);
- history: an entry (step, learning rate, the mean of every step metric as ``train_<key>``,
  then the validation fields) before the first step, every ``val_every`` steps and at the end;
- checkpoints every ``checkpoint_every`` steps (:func:`ardm_infer.artifacts.write_checkpoint`)
  and when stopping at ``stop_after`` (time-sliced jobs); a resumed run reproduces an
  uninterrupted one bit for bit (same device and thread count);
- a tqdm progress bar; a non-finite objective stops the run with ``RuntimeError``.

The trainer then writes its artifact and card from the returned state
(:func:`card_fields` holds the card keys every trainer writes).

Learning-rate schedule (both trainers): linear warm-up over ``warmup_steps``, then cosine
decay from ``lr`` to ``min_lr_ratio * lr`` at ``steps`` (:func:`learning_rate`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .artifacts import card_path, read_checkpoint, restore_checkpoint, write_checkpoint

__all__ = ["TrainingTask", "card_fields", "learning_rate", "run_result", "run_training"]


def learning_rate(step: int, config: Any) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up over
    ``config.warmup_steps``, then cosine decay from ``config.lr`` to
    ``config.min_lr_ratio * config.lr`` at ``config.steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def _no_extra_tensors() -> dict[str, torch.Tensor]:
    return {}


def _no_extra_state() -> dict[str, Any]:
    return {}


def _restore_nothing(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    return None


@dataclass
class TrainingTask:
    """What a trainer hands to :func:`run_training`.

    Attributes:
        name: the artifact name (progress bar, messages).
        out_dir: where ``checkpoint.safetensors`` / ``checkpoint.json`` live.
        identity: JSON-able description that a checkpoint must match to be resumed; it
            holds ``"training_config"`` (``config.to_dict()``).
        config: the training config (``steps``, ``val_every``, ``checkpoint_every``,
            ``lr``, ``warmup_steps``, ``min_lr_ratio``, ``to_dict``).
        optimizer: its learning rate is set by the loop before every step.
        modules, generators: saved and restored by name.
        metrics: the names of the step metrics; the first is the objective (checked
            finite); all are averaged into the history as ``train_<name>``.
        train_step: ``step -> {name: value}``: one optimiser step (0-based ``step``).
        validate: ``() -> history fields`` (e.g. ``{"val_loss": ...}``; None values when
            there is nothing to validate on).
        progress_fields: ``(metrics, lr) -> bar fields`` of the last step.
        headline: the history field shown as ``val`` on the bar after a validation.
        extra_tensors, extra_state: the trainer's own checkpointed state (e.g. chains).
        restore_extra: ``(tensors, state) -> None``, the inverse of the two above.
    """

    name: str
    out_dir: Path
    identity: dict[str, Any]
    config: Any
    optimizer: torch.optim.Optimizer
    modules: dict[str, torch.nn.Module]
    generators: dict[str, torch.Generator]
    metrics: tuple[str, ...]
    train_step: Callable[[int], dict[str, float]]
    validate: Callable[[], dict[str, Any]]
    progress_fields: Callable[[dict[str, float], float], dict[str, str]]
    headline: str
    extra_tensors: Callable[[], dict[str, torch.Tensor]] = field(default=_no_extra_tensors)
    extra_state: Callable[[], dict[str, Any]] = field(default=_no_extra_state)
    restore_extra: Callable[[dict[str, torch.Tensor], dict[str, Any]], None] = field(
        default=_restore_nothing
    )


def _resumed_state(task: TrainingTask, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The stored state after restoring the checkpoint in place, or None if there is none."""
    path = task.out_dir / "checkpoint.safetensors"
    if not path.exists():
        return None
    checkpoint = read_checkpoint(path)
    stored = checkpoint.state
    config = identity["training_config"]
    differing = [key for key, value in identity.items() if stored.get(key) != value]
    old_config = dict(stored.get("training_config") or {})
    if differing == ["training_config"] and {**old_config, "steps": config["steps"]} == config:
        if config["steps"] < stored["step"]:
            raise ValueError(
                f"checkpoint {path} is at step {stored['step']}, beyond steps={config['steps']}"
            )
        stored.setdefault("schedule_changes", []).append(
            {"at_step": stored["step"], "steps": [old_config.get("steps"), config["steps"]]}
        )
        stored["training_config"] = config
        differing = []
    if differing:
        raise ValueError(
            f"checkpoint {path} was written for a different run (differs in {differing}); "
            "use another out_dir or resume=False"
        )
    restore_checkpoint(
        checkpoint, modules=task.modules, optimizer=task.optimizer, generators=task.generators
    )
    task.restore_extra(checkpoint.extra(), stored.get("extra", {}))
    return stored


def run_training(
    task: TrainingTask, *, resume: bool, progress: bool, stop_after: int | None
) -> dict[str, Any]:
    """Run (or resume) a training task to ``config.steps`` or ``stop_after`` steps.

    Returns:
        The run state: ``completed`` (False when stopped at ``stop_after``), ``step``,
        ``history``, ``wall_seconds``, ``schedule_changes``, the identity's keys and the
        running sums.
    """
    config = task.config
    identity = json.loads(json.dumps(task.identity))
    state = (_resumed_state(task, identity) if resume else None) or {
        **identity,
        "step": 0,
        "history": [],
        "window_sums": dict.fromkeys(task.metrics, 0.0),
        "window_steps": 0,
        "wall_seconds": 0.0,
        "schedule_changes": [],
    }
    wall_before = float(state["wall_seconds"])
    t0 = time.perf_counter()

    def evaluate(step: int) -> dict[str, Any]:
        count = state["window_steps"]
        entry: dict[str, Any] = {
            "step": step,
            "lr": learning_rate(max(step - 1, 0), config) if step else 0.0,
        }
        for key, total in state["window_sums"].items():
            entry[f"train_{key}"] = total / count if count else None
        entry.update(task.validate())
        state["history"].append(entry)
        state["window_sums"] = dict.fromkeys(state["window_sums"], 0.0)
        state["window_steps"] = 0
        return entry

    def save_checkpoint() -> None:
        state["wall_seconds"] = wall_before + time.perf_counter() - t0
        state["extra"] = task.extra_state()
        write_checkpoint(
            task.out_dir,
            modules=task.modules,
            optimizer=task.optimizer,
            generators=task.generators,
            extra=task.extra_tensors(),
            state=state,
        )

    if state["step"] == 0 and not state["history"]:
        evaluate(0)
    bar = tqdm(
        total=config.steps,
        initial=state["step"],
        desc=f"train {task.name}",
        unit="step",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        while state["step"] < config.steps:
            if stop_after is not None and state["step"] >= stop_after:
                save_checkpoint()
                return {**state, "completed": False}
            step = state["step"]
            lr = learning_rate(step, config)
            for group in task.optimizer.param_groups:
                group["lr"] = lr
            metrics = task.train_step(step)
            objective = metrics[task.metrics[0]]
            if not math.isfinite(objective):
                raise RuntimeError(f"{task.name}: training objective became {objective} at {step}")
            state["step"] = step + 1
            for key in task.metrics:
                state["window_sums"][key] += metrics[key]
            state["window_steps"] += 1
            bar.update(1)
            fields = task.progress_fields(metrics, lr)
            if state["step"] % 10 == 0 or state["step"] == config.steps:
                bar.set_postfix(fields, refresh=False)
            if config.val_every and state["step"] % config.val_every == 0:
                headline = evaluate(state["step"]).get(task.headline)
                if headline is not None:
                    bar.set_postfix({**fields, "val": f"{headline:.4g}"}, refresh=False)
            if config.checkpoint_every and state["step"] % config.checkpoint_every == 0:
                save_checkpoint()
    finally:
        bar.close()

    if state["history"][-1]["step"] != state["step"] or state["window_steps"]:
        evaluate(state["step"])
    if config.checkpoint_every:
        save_checkpoint()
    else:
        state["wall_seconds"] = wall_before + time.perf_counter() - t0
    return {**state, "completed": True}


def card_fields(state: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The card keys every trainer writes from a finished run's state."""
    return {
        "name": state["name"],
        "training_config": state["training_config"],
        "steps_completed": state["step"],
        "schedule_changes": state.get("schedule_changes", []),
        "wall_seconds": state["wall_seconds"],
        "device": str(device),
        "history": state["history"],
    }


def run_result(
    state: dict[str, Any],
    weights_path: Path | None,
    card: dict[str, Any] | None,
    finals: dict[str, Any],
) -> dict[str, Any]:
    """The dictionary a trainer returns: ``completed``, ``step``, ``name``, ``weights_path``,
    ``card_path``, the trainer's ``finals`` (None when stopped early), ``wall_seconds``,
    ``history`` and ``card``."""
    done = bool(state["completed"])
    return {
        "completed": done,
        "step": state["step"],
        "name": state["name"],
        "weights_path": weights_path if done else None,
        "card_path": card_path(weights_path) if done and weights_path is not None else None,
        **{key: value if done else None for key, value in finals.items()},
        "wall_seconds": state["wall_seconds"],
        "history": state["history"],
        "card": card if done else None,
    }
