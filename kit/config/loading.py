"""Reading params: YAML files (with `extends:`) and overrides, strictly validated into the schema.

Strict like nanoGPT's configurator: an unknown key is an error naming the closest valid key, and a
value of the wrong type names key, value and expected type. A file may `extends:` another (path
relative to itself), so an experiment file holds only what it changes. Overrides (from a notebook's
parameters cell or the command line) pass through the same validation, since papermill itself only
warns on unknown names. Ranges and rules between keys are the schema's own (kit.config.schema):
they run as each section is built, and their messages get the file name in front here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kit.config.coerce import build_section
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
    return build_section(Params, raw, prefix="", source=source)


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
