"""Reading params: YAML files (with `extends:`) and overrides, strictly validated into the schema.

Strict like nanoGPT's configurator: an unknown key is an error naming the closest valid key, and a
value of the wrong type names key, value and expected type. A file may `extends:` another (path
relative to itself), so an experiment file holds only what it changes. Overrides (from a notebook's
parameters cell or the command line) pass through the same validation, since papermill itself only
warns on unknown names. Ranges and rules between keys are the schema's own (kit.config.schema):
they run as each section is built, and their messages get the file name in front here.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from kit.config.schema import Params
from kit.errors import KitError


def load_params(path: str | Path, overrides: dict[str, Any] | None = None) -> Params:
    """Read a params YAML (following `extends:`), apply overrides, and validate everything.

    `overrides` maps dotted keys ("transformer.lr") or nested dicts to values.
    """
    raw = _read_with_extends(Path(path), seen=())
    if overrides:
        deep_merge(raw, _undot(overrides))
    return params_from_dict(raw, source=str(path))


def params_from_dict(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a nested dict against the schema; errors name the file and the dotted key."""
    return _build(Params, raw, prefix="", source=source)


def dump_params(params: Params, path: str | Path) -> None:
    """Write the resolved params as YAML (sorted as in the schema)."""
    Path(path).write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))


def diff_params(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """What changed between two nested params dicts, as "dotted.key: old -> new" lines."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += diff_params(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def _read_with_extends(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise KitError(f"Params file not found: {path}. Pass a YAML like params/demo.yaml.")
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise KitError(f"Params `extends:` loops: {chain}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise KitError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise KitError(f"{path} must hold a mapping of keys to values, not {type(data).__name__}.")
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    base = _read_with_extends(path.parent / base_name, seen=(*seen, resolved))
    deep_merge(base, data)
    return base


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    """Deep-merge `update` into `base` in place (mappings merge, everything else replaces)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value


def _undot(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            deep_merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return nested


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
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
        return _build(tp, value, prefix=f"{key}.", source=source)
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
