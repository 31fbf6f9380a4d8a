"""The run folder: the one place a run's state lives between notebooks (params, metrics, files).

`outputs/<run-name>/` holds the resolved params.yaml, run_state.json (what steps record for
later ones, kit.core.run_state) and metrics.json rendered from it, env.json, predictions,
plots, the executed notebooks, and a FINISHED marker once the submission step is done. Opening
an unfinished run with the same params continues it; opening it with other params, or opening
a finished run, is refused so that no result is silently overwritten.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kit.config.loading import deep_merge
from kit.config.params import Params, diff_params, dump_params, load_params, params_from_dict
from kit.core import envinfo, platform
from kit.core.atomic import save_npz, write_atomic, write_json
from kit.core.project import find_project_root
from kit.core.run_state import RunState, from_metrics, param_value, to_metrics
from kit.errors import KitError

FINISHED = "FINISHED"


@dataclass
class Predictions:
    """One model's probabilities on the validation and test rows, with their ids."""

    model: str
    val_ids: np.ndarray
    val_probs: np.ndarray
    test_ids: np.ndarray
    test_probs: np.ndarray


@dataclass
class RunDir:
    """A run's folder and its resolved params."""

    path: Path
    params: Params
    root: Path

    @property
    def plots(self) -> Path:
        return self._sub("plots")

    @property
    def models(self) -> Path:
        return self._sub("models")

    @property
    def predictions(self) -> Path:
        return self._sub("predictions")

    @property
    def finished(self) -> bool:
        return (self.path / FINISHED).exists()

    def _sub(self, name: str) -> Path:
        folder = self.path / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def save_plot(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as plots/<name>.png (and keep it showing in a notebook)."""
        path = self.plots / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path

    def read_metrics(self) -> dict[str, Any]:
        """metrics.json as the run state renders it: for people and old callers; the steps
        read `state()` instead."""
        return to_metrics(self.state())

    def update_metrics(self, **values: Any) -> dict[str, Any]:
        """Merge values into the metrics.json layout (nested dicts merge), store the state that
        layout describes, and return the whole. Kept for older callers; steps record typed
        values with `update_state`."""
        state = self.state()
        metrics = to_metrics(state)
        deep_merge(metrics, values)
        migrated = from_metrics(metrics)
        dataclasses.replace(migrated, resolved=state.resolved).write(self.path)
        return to_metrics(migrated)

    def save_predictions(self, preds: Predictions) -> Path:
        """Store a model's probabilities as predictions/<model>.npz (atomically)."""
        return save_npz(self.predictions / f"{preds.model}.npz", val_ids=preds.val_ids,
                        val_probs=preds.val_probs, test_ids=preds.test_ids,
                        test_probs=preds.test_probs)

    def load_predictions(self, model: str) -> Predictions:
        path = self.predictions / f"{model}.npz"
        if not path.exists():
            have = sorted(p.stem for p in self.predictions.glob("*.npz"))
            raise KitError(
                f"No predictions for model {model!r} in {self.predictions} (have: {have}). "
                "Run 02_train first, or set `submit.model` to one of those."
            )
        with np.load(path, allow_pickle=True) as z:
            return Predictions(model, z["val_ids"], z["val_probs"], z["test_ids"], z["test_probs"])

    def trained_models(self) -> list[str]:
        return [m for m in self.params.models if (self.predictions / f"{m}.npz").exists()]

    def record_resources(self, step: str) -> dict[str, Any]:
        """Peak RSS and cache hits at the end of `step`, into env.json (`resources`)."""
        return envinfo.record_step_resources(self.path / "env.json", step)

    def state(self) -> RunState:
        """The typed run state (kit.core.run_state): what earlier steps recorded for later ones."""
        return RunState.read(self.path)

    def update_state(self, **changes: Any) -> RunState:
        """Record `changes` (RunState fields; dict fields merge per key) in run_state.json and
        metrics.json, atomically each; return the new state."""
        state = self.state().merged(**changes)
        state.write(self.path)
        return state

    def resolve_param(self, key: str, value: Any, source: str) -> None:
        """Record that a step set the null params `key` to `value`: in the run state, in this
        run's params and in its params.yaml (later notebooks reopen the run with it)."""
        self.state().with_resolved(key, value, source).write(self.path)
        values = self.params.to_dict()
        section = values
        *parents, last = key.split(".")
        for part in parents:
            section = section[part]
        section[last] = value
        self.params = params_from_dict(values, source=f"{self.path / 'params.yaml'} + {key}")
        dump_params(self.params, self.path / "params.yaml")

    def finish(self) -> None:
        """Mark the run finished: later opens refuse to overwrite it."""
        write_atomic(self.path / FINISHED, datetime.now(timezone.utc).isoformat() + "\n")


def resolve_params(params_path: str | Path, run_name: str = "",
                   overrides: dict[str, Any] | None = None, root: Path | None = None,
                   ) -> tuple[Params, Path]:
    """Load params (relative paths from the project root) and apply the run name."""
    root = root or find_project_root()
    path = Path(params_path)
    if not path.is_absolute() and not path.exists():
        path = root / path
    if not path.exists():
        path = platform.find_input(path) or path
    overrides = dict(overrides or {})
    if run_name:
        overrides["name"] = run_name
    return load_params(path, overrides), root


def run_path(params: Params, root: Path) -> Path:
    out = platform.kaggle_path(params.output_dir)  # /kaggle/working/... where it is moved
    return (out if out.is_absolute() else root / out) / params.name


def open_run(params_path: str | Path, run_name: str = "",
             overrides: dict[str, Any] | None = None, root: Path | None = None) -> RunDir:
    """Create the run folder, or reopen an unfinished one with the same params."""
    params, root = resolve_params(params_path, run_name, overrides, root)
    path = run_path(params, root)
    stored = path / "params.yaml"
    # Values an earlier step resolved (the params file leaves them null) are part of this run.
    resolved = {key: r.value for key, r in RunState.read(path).resolved.items()
                if param_value(params.to_dict(), key) is None}
    if resolved:
        params, root = resolve_params(params_path, run_name, {**(overrides or {}), **resolved},
                                      root)
    if (path / FINISHED).exists():
        raise KitError(
            f"Run {params.name!r} finished at {(path / FINISHED).read_text().strip()}; its "
            f"results in {path} are kept. Start a new run with another name (`run_name` in the "
            "notebook, or ./run_all.sh --name NEW), or delete that folder."
        )
    if stored.exists():
        old = params_from_dict(yaml.safe_load(stored.read_text()), source=str(stored))
        changes = diff_params(old.to_dict(), params.to_dict())
        if changes:
            raise KitError(
                f"Run folder {path} holds an unfinished run with other params ("
                + "; ".join(changes[:5])
                + "). Continue it with the same params, or pick a new run name."
            )
    path.mkdir(parents=True, exist_ok=True)
    dump_params(params, stored)
    where = platform.detect(input_dir=params.platform.input_dir,
                            working_dir=params.platform.working_dir,
                            checkpoint_dir=params.platform.checkpoint_dir,
                            disk_budget_gb=params.platform.disk_budget_gb)
    env = envinfo.environment(root, where)
    if (path / "env.json").is_file():  # keep the steps' resources of earlier notebooks
        env["resources"] = json.loads((path / "env.json").read_text()).get("resources", {})
    write_json(path / "env.json", env)
    return RunDir(path=path, params=params, root=root)
