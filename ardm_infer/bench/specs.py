"""A strategy as one column of the benchmark: label, registered name and Config.

:func:`strategy_spec` normalises every accepted spelling of an entry of
``benchmark(strategies=...)``; :func:`cell_specs` gives each (strategy, regime) cell its
settings (the tuned entry of the regime, the preset's caps, the user's options) and says
where they came from; :func:`jsonable` is the JSON form of a configuration that cell keys and
results record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..strategies.base import available_strategies, get_strategy
from ..systems import get_system

__all__ = [
    "StrategySpec",
    "cell_specs",
    "configured_spec",
    "jsonable",
    "lookahead",
    "strategy_spec",
]


@dataclass(frozen=True)
class StrategySpec:
    """A strategy as one column of the benchmark.

    Attributes:
        label: the name in the results (unique within a run).
        name: the registered strategy.
        config: its ``Config`` (None: the defaults, except ``controller`` which gets the
            shipped controller of the system, if it has one).
    """

    label: str
    name: str
    config: Any = None


def _config_for(name: str, config: Any, pde: str) -> Any:
    strat = get_strategy(name)
    if config is None:
        if name == "controller":
            config = strat.Config(controller=get_system(pde).shipped_controller)
        else:
            config = strat.Config()
    if not isinstance(config, strat.Config):
        raise TypeError(f"config of {name!r} must be a {name}.Config, got {type(config).__name__}")
    return config


def strategy_spec(item: Any, pde: str) -> StrategySpec:
    """Normalise one entry of ``strategies=``.

    Accepted: a registered name (``"dps"``); a strategy ``Config`` instance
    (``get_strategy("vc").Config(iterations=5)``, labelled by the strategy name); a
    ``(label, name)`` or ``(label, name, config)`` tuple; or a :class:`StrategySpec`.
    """
    if isinstance(item, StrategySpec):
        return dataclasses.replace(item, config=_config_for(item.name, item.config, pde))
    if isinstance(item, str):
        return StrategySpec(item, item, _config_for(item, None, pde))
    if (
        isinstance(item, tuple)
        and len(item) in (2, 3)
        and all(isinstance(v, str) for v in item[:2])
    ):
        label, name = item[0], item[1]
        config = item[2] if len(item) == 3 else None
        return StrategySpec(label, name, _config_for(name, config, pde))
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        for name in available_strategies():
            if type(item) is get_strategy(name).Config:
                return StrategySpec(name, name, item)
        raise TypeError(f"{type(item).__qualname__} is not the Config of a registered strategy")
    raise TypeError(
        "a strategy is a registered name, a strategy Config, a (label, name[, config]) tuple "
        f"or a StrategySpec; got {item!r}"
    )


def jsonable(value: Any) -> Any:
    """JSON form of a configuration: dataclasses as dicts, paths as strings, an artifact
    object as its type and sha256, anything else as its type and id."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    card = getattr(value, "card", None)
    if isinstance(card, dict) and "sha256" in card:
        return f"{type(value).__name__}(sha256={card['sha256']})"
    return f"{type(value).__name__}@{id(value):x}"


def lookahead(spec: StrategySpec) -> int:
    """Frames past the current one the strategy may read, from its ``lookahead(config)``;
    -1 where the strategy does not declare one."""
    declared = getattr(get_strategy(spec.name), "lookahead", None)
    if declared is None:
        return -1
    value = declared(spec.config) if callable(declared) else declared
    return int(value)


def configured_spec(name: str, overrides: dict[str, Any], pde: str) -> StrategySpec:
    """The spec of a strategy named as a string, its Config built from ``overrides``."""
    spec = StrategySpec(name, name, get_strategy(name).Config(**overrides))
    if spec.name == "controller" and spec.config.controller is None:
        spec = dataclasses.replace(
            spec,
            config=dataclasses.replace(spec.config, controller=get_system(pde).shipped_controller),
        )
    return strategy_spec(spec, pde)


def cell_specs(
    strategies: Sequence[Any] | None,
    specs: Sequence[StrategySpec],
    regimes: Sequence[str],
    preset_options: dict[str, dict[str, Any]],
    user_options: dict[str, dict[str, Any]],
    entry_of: Callable[[str, str], dict[str, Any] | None],
    pde: str,
) -> dict[tuple[str, str], tuple[StrategySpec, str]]:
    """Per (label, regime): the spec the cell runs and where its configuration came from
    (``"tuned"``, ``"tuned, untrusted (<n> trials)"``, ``"nothing to tune"``, ``"default"``
    or ``"given"``, with ``", capped by the preset"`` where a cap replaced a tuned value).

    Strategies named as plain strings take the tuned entry of their regime, with the preset's
    options over it (cost caps, e.g. quick's vc iterations; the source then says "capped by
    the preset") and ``strategy_options`` over both; anything given as a Config runs as
    given.  ``entry_of(regime, name)``: the tuned entry (``{"config": ..., "trusted": ...}``)
    or None."""
    if isinstance(strategies, str):
        strategies = [strategies]
    plain = set(
        available_strategies()
        if strategies is None
        else [s for s in strategies if isinstance(s, str)]
    )
    out: dict[tuple[str, str], tuple[StrategySpec, str]] = {}
    for spec in specs:
        for regime in regimes:
            key = (spec.label, regime)
            if spec.label not in plain:
                out[key] = (spec, "given")
                continue
            entry = entry_of(regime, spec.name)
            if entry is None:
                out[key] = (spec, "default")
                continue
            caps = preset_options.get(spec.name, {})
            overrides = {**entry["config"], **caps, **user_options.get(spec.name, {})}
            source = (
                "tuned"
                if entry.get("trusted", False)
                else f"tuned, untrusted ({entry.get('trials', 0)} trials)"
            )
            if entry.get("stable") is False:
                source = f"tuned, untrusted (blew up within {entry.get('stable_over')} frames)"
            if entry.get("search_space") == "none":
                source = "nothing to tune"
            if any(entry["config"].get(k, v) != v for k, v in caps.items()):
                source += ", capped by the preset"
            out[key] = (configured_spec(spec.name, overrides, pde), source)
    return out
