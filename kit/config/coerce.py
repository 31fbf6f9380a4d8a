"""Strict building of a schema section from a plain mapping: unknown keys and wrong types refused.

kit.config.loading builds whole params files with it; a section that merges a partial mapping over
another (kit.config.distill: a student's `transformer` overrides) builds the result the same way,
so both refuse a bad value with the same message.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal

from kit.errors import KitError

__all__ = ["build_section"]


def build_section(cls: type, raw: Any, prefix: str, source: str) -> Any:
    """`cls` (a schema dataclass) from `raw`; errors name `source` and the dotted key."""
    where = prefix.rstrip(".") or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise KitError(f"{source}: `{where}` must be a mapping, got {raw!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f" Did you mean `{prefix}{close[0]}`?" if close else ""
            raise KitError(
                f"{source}: unknown key `{prefix}{key}`.{hint} Valid keys here: {', '.join(names)}."
            )
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}", source)
    try:
        return cls(**kwargs)  # the schema's intervals and rules (kit.config.schema.Section)
    except KitError as err:
        raise KitError(f"{source}: {err}") from None


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float)."""
    if dataclasses.is_dataclass(tp):
        return build_section(tp, value, prefix=f"{key}.", source=source)
    if tp is Any:  # a mapping whose values a section checks itself (distill.transformer)
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # `X | None`: X's own message ("[0] is 'up'; one of ...")
            return _coerce(options[0], value, key, source)
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, key, source)
            except KitError as err:
                errors.append(err)
        raise _type_error(key, value, tp, source)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise KitError(f"{source}: `{key}` is {value!r}; it must be one of {choices}.")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(key, value, tp, source)
        return [_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, value, tp, source)
        return {
            _coerce(args[0], k, f"{key} key", source): _coerce(args[1], v, f"{key}.{k}", source)
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, value, tp, source)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, value, tp, source)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(key, value, tp, source)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, value, tp, source)
    raise TypeError(f"params schema uses an unsupported type {tp!r} at {key}")  # a kit bug


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _type_error(key: str, value: Any, tp: Any, source: str) -> KitError:
    return KitError(
        f"{source}: `{key}` is {value!r} ({type(value).__name__}); expected {_type_name(tp)}."
    )
