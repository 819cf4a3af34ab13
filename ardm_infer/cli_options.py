"""Options of the ``ardm-infer`` command line: lists, strategy options, run files.

Everything here turns user text into checked values or raises :class:`CliError` with a
message that names the option and says what was expected; :mod:`ardm_infer.cli` prints it
as one ``error:`` line.

Conventions
    * lists of strategies: names separated by ``,`` (``forecast,enkf``);
    * lists of regimes: items separated by ``;`` (a spec contains commas:
      ``"dense;stride=16, every=1, sigma=0.02"``), or one ``--regime`` per item; the old
      spelling with commas between preset names (``dense,sparse``) still works and prints a
      deprecation warning;
    * strategy options: ``--set <strategy>.<field>=<value>`` (repeatable), typed by the
      field of the strategy's ``Config`` (bool: true/false, int, float, str, None: none);
    * run files (``--config run.toml``): a ``[bench]`` table with the options of
      ``ardm-infer bench`` (lists as TOML arrays) and ``[options.<strategy>]`` tables of
      ``Config`` fields.  Options given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH_KEYS",
    "CliError",
    "FieldInfo",
    "RunFile",
    "check_device",
    "check_out",
    "config_fields",
    "load_run_file",
    "parse_sets",
    "parse_value",
    "regime_list",
    "split_names",
    "strategy_lookahead",
]


class CliError(ValueError):
    """A mistake on the command line or in a run file (printed as one ``error:`` line)."""


BENCH_KEYS: dict[str, type | tuple[type, ...]] = {
    "pde": str,
    "preset": str,
    "strategies": (list, str),
    "regimes": (list, str),
    "horizon": int,
    "trajectories": int,
    "members": int,
    "seed": int,
    "out": str,
    "resume": bool,
    "workers": int,
    "executor": str,
    "threads": int,
    "device": str,
    "ardm": str,
    "controller": str,
    "figures": bool,
    "initial": str,
    "start": int,
    "tuned": (bool, str),
}
"""Keys of the ``[bench]`` table of a run file and their TOML types."""


# ----------------------------------------------------------------------------- checks


def check_device(device: str | None) -> str | None:
    """``device`` if torch knows it and it is available here; else a :class:`CliError`."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise CliError(f"--device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {device}: no CUDA device is available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise CliError(f"--device {device}: MPS is not available on this machine")
    return device


def check_out(path: Path, option: str = "--out") -> Path:
    """A folder that exists (created if missing) and can be written; else :class:`CliError`."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{option} {path} is a file; expected a folder (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".ardm-infer-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CliError(f"{option} {path}: cannot write there ({err.strerror or err})") from None
    return path


# ----------------------------------------------------------------------------- lists


def split_names(value: str, option: str) -> list[str]:
    """Names separated by ``,`` (``;`` accepted too); an empty list is an error."""
    items = [v.strip() for v in re.split(r"[,;]", value) if v.strip()]
    if not items:
        raise CliError(f"{option} is empty; give at least one name (e.g. {option} forecast,enkf)")
    return items


def regime_list(values: Sequence[str], option: str, preset_names: Sequence[str]) -> list[str]:
    """Regimes from one or more option values (see the module docstring).

    Each value holds items separated by ``;``.  A value without ``;`` whose comma-separated
    parts are all preset names is the old spelling: accepted with a warning on stderr.

    Args:
        values: the option's values (one per occurrence).
        option: the option's name, for messages.
        preset_names: the named regimes.

    Returns:
        The regime names or spec strings, in order.
    """
    out: list[str] = []
    for value in values:
        if ";" not in value and "," in value:
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if len(parts) > 1 and all(p in preset_names for p in parts):
                print(
                    f"warning: {option} {value!r}: separating regimes with ',' is deprecated; "
                    f"write {';'.join(parts)!r} (';' between regimes) or repeat --regime",
                    file=sys.stderr,
                )
                out += parts
                continue
        out += [v.strip() for v in value.split(";") if v.strip()]
    if not out:
        raise CliError(
            f"{option} is empty; give 'all', preset names or specs separated by ';' "
            f"(e.g. {option} 'dense;stride=16, every=1, sigma=0.02')"
        )
    return out


# ----------------------------------------------------------------------------- Config fields


@dataclass(frozen=True)
class FieldInfo:
    """One field of a strategy ``Config`` as the command line shows and parses it.

    Attributes:
        name: the field name.
        type: its annotation as text (``"float | None"``).
        default: its default value (``dataclasses.MISSING`` if none).
        range: the allowed values as text (``""`` when not declared).
        doc: one line of documentation (``""`` when none).
        annotation: the evaluated annotation, or None when it cannot be evaluated.
    """

    name: str
    type: str
    default: Any
    range: str
    doc: str
    annotation: Any = None


def _attribute_docs(config_cls: type) -> dict[str, str]:
    """``{field: text}`` from an ``Attributes:`` section of the class docstring."""
    docs: dict[str, str] = {}
    current = None
    for line in (config_cls.__doc__ or "").splitlines():
        match = re.match(r"\s*(?:Attributes:\s*)?([a-z_][a-z0-9_]*):\s+(.*)", line)
        if match:
            current = match.group(1)
            docs[current] = match.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
        else:
            current = None
    return docs


def _get(item: Any, key: str, default: Any = "") -> Any:
    if isinstance(item, Mapping):
        return item.get(key, default)
    return getattr(item, key, default)


def _type_text(annotation: Any) -> str:
    """A short annotation: module paths dropped (``Callable[[Problem, int], ...] | None``)."""
    if isinstance(annotation, type):
        return annotation.__name__
    text = annotation if isinstance(annotation, str) else str(annotation)
    return re.sub(r"\b(?:[A-Za-z_][A-Za-z0-9_]*\.)+(?=[A-Za-z_])", "", text)


def config_fields(config_cls: type) -> list[FieldInfo]:
    """The fields of a strategy ``Config`` with their types, defaults, ranges and docs.

    Uses ``ardm_infer.strategies.config_fields`` when the package provides it (field
    ranges and docs declared with the fields), else :func:`dataclasses.fields` with the
    ``Attributes:`` section of the class docstring.
    """
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # an annotation that cannot be evaluated here: keep the text
        hints = {}
    from . import strategies

    provided = getattr(strategies, "config_fields", None)
    if provided is not None:
        out = []
        for item in provided(config_cls):
            name = str(_get(item, "name"))
            annotation = hints.get(name, _get(item, "type", None))
            out.append(
                FieldInfo(
                    name=name,
                    type=_type_text(_get(item, "type", annotation)),
                    default=_get(item, "default", dataclasses.MISSING),
                    range=str(_get(item, "range", "") or ""),
                    doc=str(_get(item, "doc", "") or ""),
                    annotation=annotation if not isinstance(annotation, str) else None,
                )
            )
        return out
    docs = _attribute_docs(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        annotation = hints.get(f.name)
        out.append(
            FieldInfo(
                name=f.name,
                type=_type_text(annotation if annotation is not None else f.type),
                default=default,
                range=str(f.metadata.get("range", "")) if f.metadata else "",
                doc=docs.get(f.name, ""),
                annotation=annotation,
            )
        )
    return out


def strategy_lookahead(name: str, config: Any = None) -> int | None:
    """Frames of future observations strategy ``name`` may read with ``config`` (default:
    its default ``Config``); None when the strategy does not declare it or it depends on
    an artifact that could not be loaded."""
    from .strategies import get_strategy

    strategy = get_strategy(name)
    method = getattr(strategy, "lookahead", None)
    if method is None:
        return None
    try:
        return int(method(strategy.Config() if config is None else config))
    except Exception:
        return None


# ----------------------------------------------------------------------------- values

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null"}
_PRIORITY = (bool, int, float, Path, str)  # the order a union's members are tried in


def _scalar(text: str, kind: type, where: str) -> Any:
    low = text.strip().lower()
    if kind is bool:
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise CliError(f"{where}: expected true or false, got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise CliError(f"{where}: expected an integer, got {text!r}") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise CliError(f"{where}: expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise CliError(f"{where}: expected a finite number, got {text!r}")
        return value
    if kind is str:
        return text
    if kind is Path:
        return Path(text)
    raise CliError(f"{where}: a {kind.__name__} cannot be given on the command line")


def parse_value(text: str, annotation: Any, where: str) -> Any:
    """Convert ``text`` to a value of ``annotation`` (bool, int, float, str, Path, a union
    of those with None, or Any / unknown: the most specific literal)."""
    if annotation is None or annotation is Any:
        for kind in (bool, int, float):
            try:
                return _scalar(text, kind, where)
            except CliError:
                continue
        return None if text.strip().lower() in _NONE else text
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if type(None) in args and text.strip().lower() in _NONE:
            return None
        kinds = [a for a in args if a is not type(None)]
        order = sorted(kinds, key=lambda k: _PRIORITY.index(k) if k in _PRIORITY else 9)
        errors = []
        for kind in order:
            try:
                return parse_value(text, kind, where)
            except CliError as err:
                errors.append(str(err).split(": ", 1)[-1])
        raise CliError(f"{where}: {'; or '.join(errors) or 'unsupported type'}")
    if origin is not None or not isinstance(annotation, type):
        raise CliError(f"{where}: a {_type_text(annotation)} cannot be given on the command line")
    return _scalar(text, annotation, where)


def _field(name: str, field: str, where: str) -> FieldInfo:
    from .strategies import get_strategy

    try:
        strategy = get_strategy(name)
    except ValueError as err:  # it names the registered strategies
        raise CliError(f"{where}: {err}") from None
    fields = {f.name: f for f in config_fields(strategy.Config)}
    if field not in fields:
        known = ", ".join(fields) or "none"
        raise CliError(f"{where}: {name} has no option {field!r}; its options: {known}")
    return fields[field]


def parse_sets(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--set <strategy>.<field>=<value>`` items -> ``{strategy: {field: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        where = f"--set {item!r}"
        target, eq, text = item.partition("=")
        name, dot, field = target.strip().partition(".")
        if not (eq and dot and name and field):
            raise CliError(f"{where}: expected <strategy>.<option>=<value>, e.g. dps.scale=2")
        info = _field(name, field.strip(), where)
        out.setdefault(name, {})[info.name] = parse_value(text.strip(), info.annotation, where)
    return out


# ----------------------------------------------------------------------------- run files


@dataclass(frozen=True)
class RunFile:
    """A parsed run file.

    Attributes:
        path: where it was read from.
        text: its content, verbatim (recorded in the results).
        bench: the ``[bench]`` table (keys of :data:`BENCH_KEYS`).
        options: ``{strategy: {field: value}}`` from the ``[options.<strategy>]`` tables.
    """

    path: Path
    text: str
    bench: dict[str, Any]
    options: dict[str, dict[str, Any]]


def _check_type(value: Any, expected: type | tuple[type, ...], where: str) -> None:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join("array" if k is list else k.__name__ for k in kinds)
        raise CliError(f"{where}: expected a {names}, got {value!r}")
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise CliError(f"{where}: expected an array of strings, got {value!r}")


def _option_value(value: Any, info: FieldInfo, where: str) -> Any:
    """A TOML value for a Config field: ints accepted for floats, strings parsed."""
    if isinstance(value, str):
        return parse_value(value, info.annotation, where) if info.annotation is not str else value
    if isinstance(value, int) and not isinstance(value, bool) and info.annotation is float:
        return float(value)
    return value


def load_run_file(path: str | Path) -> RunFile:
    """Read and check a run file (see the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise CliError(f"--config {path}: cannot read it ({err.strerror or err})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CliError(f"--config {path}: not valid TOML ({err})") from None
    unknown = sorted(set(data) - {"bench", "options"})
    if unknown:
        raise CliError(
            f"--config {path}: unknown table(s) {', '.join(unknown)}; expected [bench] and "
            "[options.<strategy>]"
        )
    bench = dict(data.get("bench", {}))
    for key, value in bench.items():
        if key not in BENCH_KEYS:
            raise CliError(
                f"--config {path}: unknown key {key!r} in [bench]; expected one of "
                f"{', '.join(BENCH_KEYS)}"
            )
        _check_type(value, BENCH_KEYS[key], f"--config {path}: [bench] {key}")
    options: dict[str, dict[str, Any]] = {}
    for name, table in dict(data.get("options", {})).items():
        if not isinstance(table, dict):
            raise CliError(f"--config {path}: [options.{name}] must be a table of options")
        for field, value in table.items():
            where = f"--config {path}: [options.{name}] {field}"
            info = _field(name, field, where)
            options.setdefault(name, {})[field] = _option_value(value, info, where)
    return RunFile(path=path, text=text, bench=bench, options=options)
