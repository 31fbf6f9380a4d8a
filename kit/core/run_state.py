"""The run state: what one step records for a later one, typed, versioned, written atomically.

It lives in `run_state.json` beside params.yaml, and is the only thing steps read back from each
other: the resolved params (values a params file leaves null that a step fixed from the data,
01_eda's `transformer.max_length`, also written into the run's params.yaml), the EDA summary,
each model's report and per-fold scores, the best model, the decision and the submission.
`metrics.json` is rendered from it after every change (`to_metrics`) for people and MLflow; no
step reads that file. A run folder written before run_state.json (metrics.json only, or version
1 with the resolved params only) is read by migrating its metrics.json (`from_metrics`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.core.atomic import write_json
from kit.core.run_records import (
    BestModel,
    Decision,
    EdaSummary,
    FoldScore,
    ModelReport,
    Resolved,
    SubmissionRecord,
)
from kit.errors import KitError

__all__ = ["METRICS_FILE", "STATE_FILE", "VERSION", "BestModel", "Decision", "EdaSummary",
           "FoldScore", "ModelReport", "Resolved", "RunState", "SubmissionRecord",
           "from_metrics", "param_value", "to_metrics"]

STATE_FILE = "run_state.json"
METRICS_FILE = "metrics.json"
VERSION = 2  # 1: resolved params only (the rest in metrics.json); 2: everything below


@dataclass(frozen=True)
class RunState:
    """Everything `run_state.json` holds; `read` and `write` are the only way in and out."""

    version: int = VERSION
    resolved: dict[str, Resolved] = field(default_factory=dict)
    eda: EdaSummary | None = None
    models: dict[str, ModelReport] = field(default_factory=dict)
    folds: dict[str, dict[str, FoldScore]] = field(default_factory=dict)  # kind -> fold tag ->
    best: BestModel | None = None
    decision: Decision | None = None
    submission: SubmissionRecord | None = None
    # Top-level keys of a metrics.json from before this file that no field above holds: kept so
    # that the record loses nothing; no step reads them.
    legacy: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> RunState:
        """The state of the run in `folder` (an older run's metrics.json, migrated, if no file)."""
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            return _from_metrics_file(Path(folder))
        try:
            raw = json.loads(path.read_text())
            version = int(raw["version"])
        except (ValueError, KeyError, TypeError) as err:
            raise KitError(f"{path} is not a run state file ({err}). Delete it: the run then "
                           "reads from its metrics.json; rerun 01_eda to record the resolved "
                           "params again.") from err
        if version > VERSION:
            raise KitError(f"{path} has run state version {version}; this kit reads up to "
                           f"{VERSION}. Update the kit, or start a new run.")
        resolved = {k: Resolved(k, v["value"], v["source"])
                    for k, v in raw.get("resolved", {}).items()}
        if version == 1:  # only the resolved params lived here; the rest is in metrics.json
            return dataclasses.replace(_from_metrics_file(Path(folder)),
                                       resolved=resolved)
        try:
            return cls.from_dict({**raw, "resolved": resolved})
        except (TypeError, KeyError, AttributeError) as err:
            raise KitError(f"{path}: a field does not match run state version {VERSION} "
                           f"({err}). Delete the file to read the run from its metrics.json, "
                           "or start a new run.") from err

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunState:
        def opt(kind: type, value: Any) -> Any:
            return None if value is None else kind(**value)

        return cls(
            version=VERSION, resolved=raw.get("resolved", {}),
            eda=opt(EdaSummary, raw.get("eda")),
            models={k: ModelReport(**v) for k, v in raw.get("models", {}).items()},
            folds={k: {tag: FoldScore(**s) for tag, s in v.items()}
                   for k, v in raw.get("folds", {}).items()},
            best=opt(BestModel, raw.get("best")), decision=opt(Decision, raw.get("decision")),
            submission=opt(SubmissionRecord, raw.get("submission")),
            legacy=raw.get("legacy", {}))

    def write(self, folder: Path) -> Path:
        """Write run_state.json (atomically), then metrics.json rendered from it."""
        data = asdict(self)
        data["version"] = VERSION
        data["resolved"] = {k: {"value": r.value, "source": r.source}
                            for k, r in self.resolved.items()}
        path = write_json(Path(folder) / STATE_FILE, data)
        write_json(Path(folder) / METRICS_FILE, to_metrics(self))
        return path

    def with_resolved(self, key: str, value: Any, source: str) -> RunState:
        """This state plus `key` resolved to `value` (replacing an earlier resolution)."""
        return self.merged(resolved={key: Resolved(key, value, source)})

    def merged(self, **changes: Any) -> RunState:
        """This state with `changes` (field names): dict fields merge key by key (the folds two
        levels deep), the others are replaced."""
        values = {}
        for name, new in changes.items():
            old = getattr(self, name)  # an unknown field is an AttributeError naming it
            if isinstance(old, dict) and isinstance(new, dict):
                new = {**old, **{k: ({**old[k], **v} if isinstance(v, dict)
                                     and isinstance(old.get(k), dict) else v)
                                 for k, v in new.items()}}
            values[name] = new
        return dataclasses.replace(self, **values)

    def model_score(self, model: str, metric: str) -> float | None:
        """`model`'s validation `metric`, or None when it has no report (yet)."""
        report = self.models.get(model)
        return None if report is None else report.score(metric)

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


# ------------------------------------------------------------ metrics.json: rendered, migrated

_TYPED = ("cv_mean", "cv_std", "folds", "train_seconds")
# Numbers a fit reports about itself that are not scores (kit.models.kinds.transformer).
_FIT_FACTS = {"global_step", "max_length", "resumed_from_step", "best_step",
              "memory_estimate_gb", "measured_peak_gb"}


def to_metrics(state: RunState) -> dict[str, Any]:
    """The metrics.json of `state`: the layout the kit has always written, for people, MLflow
    and tools that read it (run_all.sh)."""
    out: dict[str, Any] = dict(state.legacy)
    if state.eda is not None:
        out["eda"] = asdict(state.eda)
    if state.models:
        out["models"] = {kind: r.row() for kind, r in state.models.items()}
    if state.folds:
        out["folds"] = {kind: {tag: {s.metric: s.score, "seconds": s.seconds, "rows": s.rows}
                               for tag, s in fits.items()} for kind, fits in state.folds.items()}
    if state.best is not None:
        out.update(metric=state.best.metric, best_model=state.best.model,
                   validation=state.best.validation)
    if state.decision is not None:
        out["decision"] = asdict(state.decision)
    if state.submission is not None:
        sub = asdict(state.submission)
        out.update(submission={k: v for k, v in sub.items() if k != "local"}, **sub["local"])
    return out


def from_metrics(metrics: dict[str, Any]) -> RunState:
    """The state a metrics.json (written before run_state.json) describes."""
    m = dict(metrics)
    metric = m.get("metric")
    models = {kind: _report(flat) for kind, flat in (m.pop("models", None) or {}).items()
              if flat is not None}
    folds = {kind: {tag: _fold_score(s, metric) for tag, s in fits.items()}
             for kind, fits in (m.pop("folds", None) or {}).items()}
    eda = m.pop("eda", None)
    best_model, validation = m.pop("best_model", None), m.pop("validation", None)
    m.pop("metric", None)
    if validation is None and best_model in models and metric:  # the best model's own score
        validation = models[best_model].score(metric)
    best = (BestModel(best_model, metric, float(validation))
            if best_model is not None and validation is not None else None)
    decision = m.pop("decision", None)
    sub = m.pop("submission", None)
    local = {k: m.pop(k) for k in list(m) if k.startswith("local_") or k.endswith("_gap")}
    return RunState(
        eda=None if eda is None else EdaSummary(**_known(EdaSummary, eda)),
        models=models, folds=folds, best=best,
        decision=None if decision is None else Decision(**_known(Decision, decision)),
        submission=(None if sub is None else SubmissionRecord(
            **{"command": None, "kaggle_answer": None, **_known(SubmissionRecord, sub)},
            local=local)),
        legacy=m)


def _report(flat: dict[str, Any]) -> ModelReport:
    typed = {k: flat[k] for k in _TYPED if k in flat}
    scores = {k: float(v) for k, v in flat.items() if k not in _TYPED and k not in _FIT_FACTS
              and isinstance(v, (int, float)) and not isinstance(v, bool)}
    details = {k: v for k, v in flat.items() if k not in _TYPED and k not in scores}
    return ModelReport(scores=scores, details=details, **typed)


def _fold_score(flat: dict[str, Any], metric: str | None) -> FoldScore:
    name = metric or next(k for k in flat if k not in ("seconds", "rows"))
    return FoldScore(name, float(flat[name]), float(flat.get("seconds", 0.0)),
                     int(flat.get("rows", 0)))


def _known(kind: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(kind)}
    return {k: v for k, v in values.items() if k in names}


def _from_metrics_file(folder: Path) -> RunState:
    """A run folder from before run_state.json: its metrics.json migrated (empty if none)."""
    path = folder / METRICS_FILE
    if not path.is_file():
        return RunState()
    try:
        return from_metrics(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError, StopIteration) as err:
        raise KitError(
            f"{path} was written before run_state.json and cannot be migrated ({err!r}). "
            "Rerun 02_train (and the steps after it) for this run, or start a new run; the "
            "kit then writes run_state.json, which it reads from then on.") from err
