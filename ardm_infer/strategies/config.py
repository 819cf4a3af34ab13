"""Strategy options: declared once (type, range, doc), validated at construction.

Every field of a strategy's frozen ``Config`` is declared with :func:`option`, which stores
its type, range and documentation in the dataclass field's metadata; the Config's
``__post_init__`` calls :func:`validate_config`, so a Config can only exist with valid
values: the right type (``TypeError`` otherwise), finite, and in range (``ValueError``),
each message naming the option.  :func:`config_fields` lists the declarations (the CLI's
``ardm-infer strategies`` prints them), and :func:`~ardm_infer.strategies.register` writes
them into the Config's docstring, so they are documented in one place.

Types: ``float`` (an int or float, not a bool; stored as float; always finite), ``int``
(an integer, not a bool and not 2.5 or "4"), ``bool``, ``str`` (with ``choices``),
``callable``, or a tuple of classes (any of them); ``optional=True`` also allows None.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigField", "config_fields", "option", "validate_config"]

_KEY = "ardm_infer.option"


@dataclass(frozen=True)
class _Option:
    kind: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False

    def type_name(self) -> str:
        if isinstance(self.kind, tuple):
            name = " or ".join(k.__name__ for k in self.kind)
        else:
            name = self.kind if isinstance(self.kind, str) else self.kind.__name__
        return f"{name} or None" if self.optional else name

    def range_text(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.low is None and self.high is None:
            text = "finite" if self.kind is float else "any"
        else:
            low = "" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
            high = "" if self.high is None else f"{self.high:g}{')' if self.high_open else ']'}"
            if self.low is not None and self.high is not None:
                text = f"{low}, {high}"
            elif self.low is not None:
                text = f"{'>' if self.low_open else '>='} {self.low:g}"
            else:
                text = f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"{text}, or None" if self.optional else text


@dataclass(frozen=True)
class ConfigField:
    """One declared option of a strategy ``Config``.

    Attributes:
        name: the field name.
        type: its type, in words (e.g. ``"float"``, ``"int"``, ``"float or None"``).
        default: the default value.
        range: the allowed values, in words (e.g. ``"[0, 1]"``, ``"> 0"``,
            ``"one of 'etkf', 'perturbed'"``).
        doc: what it does.
    """

    name: str
    type: str
    default: Any
    range: str
    doc: str


def option(
    default: Any,
    doc: str,
    *,
    kind: Any = float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple[Any, ...] | None = None,
    optional: bool = False,
) -> Any:
    """A Config field with its declaration: ``field(default=..., metadata=...)``.

    Args:
        default: the default value (must itself be valid).
        doc: one or two sentences on what the option does.
        kind: ``float``, ``int``, ``bool``, ``str``, ``"callable"`` or a tuple of classes.
        low, high: bounds (floats and ints), inclusive unless ``low_open`` / ``high_open``.
        choices: the allowed values (strings).
        optional: None is allowed as well.
    """
    declared = _Option(kind, doc, low, high, low_open, high_open, choices, optional)
    return dataclasses.field(default=default, metadata={_KEY: declared})


def _declaration(field: dataclasses.Field) -> _Option | None:
    return field.metadata.get(_KEY)


def _owner(config: Any) -> str:
    return type(config).__qualname__


def _check(owner: str, name: str, value: Any, spec: _Option) -> Any:
    """The validated (and normalised) value; raises TypeError / ValueError naming it."""
    if value is None:
        if spec.optional:
            return None
        raise TypeError(f"{owner}.{name} must be a {spec.type_name()}, got None")
    where = f"{owner}.{name}"
    kind = spec.kind
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{where} must be a number (float), got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value!r}")
    elif kind is int:
        if isinstance(value, bool):
            raise TypeError(f"{where} must be an integer, got {value!r}")
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(
                f"{where} must be an integer, got {value!r} ({type(value).__name__})"
            ) from None
    elif kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where} must be True or False, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise TypeError(f"{where} must be a string, got {value!r}")
    elif kind == "callable":
        if not callable(value):
            raise TypeError(f"{where} must be a callable, got {type(value).__name__}")
    elif isinstance(kind, tuple):
        if not isinstance(value, kind):
            raise TypeError(f"{where} must be a {spec.type_name()}, got {type(value).__name__}")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{where} must be {spec.range_text()}, got {value!r}")
    if kind in (float, int):
        too_low = spec.low is not None and (
            value <= spec.low if spec.low_open else value < spec.low
        )
        too_high = spec.high is not None and (
            value >= spec.high if spec.high_open else value > spec.high
        )
        if too_low or too_high:
            raise ValueError(f"{where} must be {spec.range_text()}, got {value!r}")
    return value


_ANNOTATED: dict[str, _Option] = {
    "float": _Option(float, ""),
    "int": _Option(int, ""),
    "bool": _Option(bool, ""),
    "str": _Option(str, ""),
}


def _from_annotation(field: dataclasses.Field) -> _Option | None:
    """A fallback declaration from a plain annotation (``float``, ``int | None``, ...)."""
    text = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    optional = False
    parts = [p.strip() for p in str(text).split("|")]
    if "None" in parts:
        optional = True
        parts.remove("None")
    if len(parts) != 1 or parts[0] not in _ANNOTATED:
        return None
    return dataclasses.replace(_ANNOTATED[parts[0]], optional=optional)


def validate_config(config: Any) -> None:
    """Check every field of a strategy Config (type, finiteness, range); call it first in
    ``__post_init__``.  Numbers are normalised in place (``scale=1`` becomes ``1.0``).

    Fields declared with :func:`option` are checked against their declaration; a plain
    field is checked against its annotation when that is ``float``, ``int``, ``bool`` or
    ``str`` (optionally ``| None``).

    Raises:
        TypeError: a value of the wrong type, naming ``Strategy.Config.field``.
        ValueError: a non-finite or out-of-range value, naming it and the allowed range.
    """
    owner = _owner(config)
    for field in dataclasses.fields(config):
        spec = _declaration(field) or _from_annotation(field)
        if spec is None:
            continue
        value = _check(owner, field.name, getattr(config, field.name), spec)
        object.__setattr__(config, field.name, value)


def config_fields(config: Any) -> list[ConfigField]:
    """The declared options of a strategy ``Config`` (a class or an instance), in order.

    Example: ``config_fields(get_strategy("dps").Config)`` ->
    ``[ConfigField(name="scale", type="float", default=1.0, range=">= 0", doc=...), ...]``.
    """
    cls = config if isinstance(config, type) else type(config)
    out = []
    for field in dataclasses.fields(cls):
        spec = _declaration(field) or _from_annotation(field)
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        if spec is None:
            out.append(ConfigField(field.name, str(field.type), default, "any", ""))
        else:
            out.append(
                ConfigField(field.name, spec.type_name(), default, spec.range_text(), spec.doc)
            )
    return out


def document_config(cls: type) -> None:
    """Append the declared options to ``cls.__doc__`` (called by ``register``)."""
    fields = config_fields(cls)
    if not fields or "Options:" in (cls.__doc__ or ""):
        return
    lines = [(cls.__doc__ or "").rstrip(), "", "Options:"]
    for f in fields:
        lines.append(f"    {f.name} ({f.type}, {f.range}; default {f.default!r}): {f.doc}")
    cls.__doc__ = "\n".join(lines).lstrip("\n")
