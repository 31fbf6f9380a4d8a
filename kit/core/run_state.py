"""The run state: what one step derives for a later one, typed, versioned, written atomically.

It lives in `run_state.json` beside params.yaml. Today it holds the resolved params: values a
params file leaves null that a step fixed from the data (01_eda's `transformer.max_length`).
Each is also written into the run's params.yaml, and reapplied when a later notebook reopens
the run, so the run folder alone says how it was trained. A run folder without the file (written
before it existed) reads as an empty state.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.core.atomic import write_json
from kit.errors import KitError

__all__ = ["STATE_FILE", "VERSION", "Resolved", "RunState", "param_value"]

STATE_FILE = "run_state.json"
VERSION = 1


@dataclass(frozen=True)
class Resolved:
    """A params key the params file left null, the value a step chose, and why."""

    key: str  # dotted, e.g. "transformer.max_length"
    value: Any
    source: str  # which step and how, e.g. "01_eda: p99 of the training texts' token lengths"


@dataclass(frozen=True)
class RunState:
    """Everything `run_state.json` holds; `read` and `write` are the only way in and out."""

    version: int = VERSION
    resolved: dict[str, Resolved] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> RunState:
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text())
            version = int(raw["version"])
        except (ValueError, KeyError, TypeError) as err:
            raise KitError(f"{path} is not a run state file ({err}). Delete it and rerun "
                           "01_eda to record the resolved params again.") from err
        if version > VERSION:
            raise KitError(f"{path} has run state version {version}; this kit reads up to "
                           f"{VERSION}. Update the kit, or start a new run.")
        resolved = {k: Resolved(k, v["value"], v["source"])
                    for k, v in raw.get("resolved", {}).items()}
        return cls(version=VERSION, resolved=resolved)

    def write(self, folder: Path) -> Path:
        data = {"version": self.version,
                "resolved": {k: {"value": r.value, "source": r.source}
                             for k, r in self.resolved.items()}}
        return write_json(Path(folder) / STATE_FILE, data)

    def with_resolved(self, key: str, value: Any, source: str) -> RunState:
        """This state plus `key` resolved to `value` (replacing an earlier resolution)."""
        return RunState(self.version, {**self.resolved, key: Resolved(key, value, source)})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def param_value(params_dict: dict[str, Any], key: str) -> Any:
    """The value of dotted `key` in a nested params dict (None when absent)."""
    value: Any = params_dict
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value
