"""MLflow tracking of a run folder: params, per-step metrics, artifacts, the best model registered.

One MLflow run per kit run folder. 02_train opens it (`open_tracker`) and keeps its id in the run
folder (`RUN_FILE`), so a rerun or a resumed session logs into the same MLflow run; the params go
in flattened (`transformer.lr`), the training curves per optimizer step through a TrainerCallback
(kit.tracking.callback), each model's validation metrics as it finishes. 04_submit
(`track_submission`) logs the run folder's files (params, metrics.json, the decision rule, the
submission, plots, training curves), registers the submitted model under the competition slug
when its validation score is the best of the experiment, and closes the run.

Where: `tracking.uri`, else `$MLFLOW_TRACKING_URI`, else a local sqlite file
`<output_dir>/mlflow.db` with artifacts in `<output_dir>/mlartifacts` (no server to start; browse
with `mlflow ui --backend-store-uri sqlite:///<abs path>/mlflow.db`).

Tracking never stops a run: a server is asked first with a bounded timeout, and a server that
does not answer, or any later tracking error, is said once as a warning; the run goes on
untracked. `tracking.enabled: auto` tracks when mlflow is installed (the `tracking` extra).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.core.atomic import write_json
from kit.core.rundir import RunDir
from kit.errors import KitError

__all__ = ["RUN_FILE", "Tracker", "TrackingSummary", "open_tracker", "track_submission"]

log = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
_BATCH = 100  # MLflow's limit on params per log_batch call


@dataclass
class TrackingSummary:
    """Where a run was tracked, and the model version registered for it (if any)."""

    uri: str | None
    run_id: str | None
    experiment: str | None
    registered_model: str | None = None
    registered_version: str | None = None
    artifacts: list[str] = field(default_factory=list)


@dataclass
class Tracker:
    """An MLflow run of one kit run folder; every method is a no-op when tracking is off."""

    uri: str | None = None
    experiment: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None
    client: Any = None  # mlflow.MlflowClient; None: off
    _warned: bool = False

    @property
    def active(self) -> bool:
        return self.client is not None and self.run_id is not None

    def call(self, what: str, action: Callable[[], Any]) -> Any:
        """Run one tracking call; on failure warn once, stop tracking, and go on (None)."""
        if self.client is None:
            return None
        try:
            return action()
        except Exception as err:  # any error: tracking must never stop a run
            self.stop(f"MLflow {what} failed at {self.uri} ({type(err).__name__}: "
                      f"{_first_line(err)})")
            return None

    def stop(self, reason: str) -> None:
        """Turn tracking off, saying why once."""
        self.client = None
        if not self._warned:
            self._warned = True
            log.warning(f"{reason}; this run goes on without tracking.")

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, _param_text(v)) for k, v in sorted(_flatten(params).items())]
        for start in range(0, len(flat), _BATCH):
            self.call("logging params", lambda s=start: self.client.log_batch(
                self.run_id, params=flat[s : s + _BATCH]))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Finite numbers of `metrics` at `step` (others are skipped)."""
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if _number(v)]
        if rows:
            self.call("logging metrics", lambda: self.client.log_batch(self.run_id, metrics=rows))

    def last_step(self, key: str) -> int | None:
        """The last step logged for metric `key` (a resumed session skips those)."""
        history = self.call("reading metrics", lambda: self.client.get_metric_history(
            self.run_id, key))
        return max((m.step for m in history), default=None) if history else None

    def callbacks(self, prefix: str) -> list[Any]:
        """TrainerCallbacks that log the training curves as `<prefix>/<name>` (none when off)."""
        if not self.active:
            return []
        from kit.tracking.callback import MetricsCallback  # lazy: transformers, when training

        return [MetricsCallback(self, prefix)]

    def log_files(self, files: Iterable[Path], folder: str | None = None) -> list[str]:
        """Copy files or folders into the run's artifacts; returns the names logged."""
        logged = []
        for path in files:
            if path.is_dir():
                dest = f"{folder}/{path.name}" if folder else path.name
                self.call("logging artifacts", lambda p=path, d=dest: self.client.log_artifacts(
                    self.run_id, str(p), d))
            elif path.is_file():
                self.call("logging artifacts", lambda p=path: self.client.log_artifact(
                    self.run_id, str(p), folder))
            else:
                continue
            if self.active:
                logged.append(f"{folder}/{path.name}" if folder else path.name)
        return logged


def open_tracker(run: RunDir) -> Tracker:
    """The MLflow run of `run` (created, or reopened from RUN_FILE); an inactive one when off."""
    cfg = run.params.tracking
    installed = importlib.util.find_spec("mlflow") is not None
    if cfg.enabled is False or (cfg.enabled == "auto" and not installed):
        return Tracker()
    if not installed:
        raise KitError(
            "tracking.enabled is true but mlflow is not installed. Install it "
            "(pip install 'compkit[tracking]', or pip install mlflow), or set "
            "tracking.enabled: auto to track only where mlflow is installed."
        )
    uri, artifacts = _resolve_uri(run)
    tracker = Tracker(uri=uri, experiment=cfg.experiment or run.params.competition.slug)
    problem = _unreachable(uri, cfg.timeout_seconds)
    if problem:
        tracker.stop(f"MLflow tracking server {uri} did not answer within "
                     f"{cfg.timeout_seconds:g} s ({problem})")
        return tracker
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if uri.startswith(("http://", "https://")):
        # MLflow retries a failing request for minutes by default; a server that answered the
        # check and then fails should cost seconds, not stall training.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(10, int(cfg.timeout_seconds))))
    # A new sqlite store announces its schema set-up on stderr: not news for a notebook reader.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    from mlflow import MlflowClient

    tracker.client = MlflowClient(tracking_uri=uri)
    tracker.experiment_id = tracker.call("opening the experiment", lambda: _experiment(
        tracker.client, tracker.experiment, artifacts))
    saved = _read_run_file(run.path / RUN_FILE, uri)
    tracker.run_id = saved and tracker.call("reading the run", lambda: _existing_run(
        tracker.client, saved))
    if tracker.client is not None and not tracker.run_id:
        metric = run.params.competition.metric
        created = tracker.call("creating the run", lambda: tracker.client.create_run(
            tracker.experiment_id, run_name=run.params.name,
            tags={"compkit.run_folder": str(run.path), "compkit.metric": metric,
                  "compkit.competition": run.params.competition.slug}))
        tracker.run_id = None if created is None else created.info.run_id
        tracker.log_params(run.params.to_dict())
    if tracker.active:
        write_json(run.path / RUN_FILE, {"uri": uri, "run_id": tracker.run_id,
                                         "experiment": tracker.experiment,
                                         "experiment_id": tracker.experiment_id})
        log.info(f"MLflow: run {tracker.run_id} in experiment {tracker.experiment!r} at {uri}")
    return tracker


def track_submission(run: RunDir, model: str) -> TrackingSummary:
    """Log the run folder's results, register `model` when it is the best, close the run."""
    from kit.evaluation.metrics import get_metric

    tracker = open_tracker(run)
    summary = TrackingSummary(tracker.uri, tracker.run_id, tracker.experiment)
    if not tracker.active:
        return summary
    state = run.state()
    validation = state.best.validation if state.best else None
    local = state.submission.local if state.submission else {}
    tracker.log_metrics({"validation": validation,
                         **{k: local.get(k) for k in ("local_public", "local_private",
                                                      "local_gap")}})
    tracker.call("tagging the run", lambda: tracker.client.set_tag(
        tracker.run_id, "compkit.submitted_model", model))
    files = sorted(p for p in run.path.iterdir()
                   if p.is_file() and p.suffix in (".json", ".yaml", ".csv") and p.name != RUN_FILE)
    summary.artifacts = tracker.log_files(files)
    summary.artifacts += tracker.log_files([run.path / "plots"])
    summary.artifacts += tracker.log_files(sorted(run.models.glob("*/training_curves*.png")),
                                           "plots")
    folder = _model_folder(run, model)
    if run.params.tracking.register_model and folder is not None and _number(validation):
        greater = get_metric(run.params.competition.metric).greater_is_better
        version = _register_if_best(tracker, run, folder, float(validation), greater)
        if version is not None:
            summary.registered_model, summary.registered_version = _model_name(run), version
    tracker.call("closing the run", lambda: tracker.client.set_terminated(tracker.run_id))
    if tracker.active:
        log.info(f"MLflow: logged {len(summary.artifacts)} artifacts to run {tracker.run_id}"
                 + (f"; registered {summary.registered_model} version "
                    f"{summary.registered_version}" if summary.registered_version else ""))
    summary.run_id = tracker.run_id
    return summary


def _register_if_best(tracker: Tracker, run: RunDir, folder: Path, validation: float,
                      greater: bool) -> str | None:
    """A new version of the slug's registered model, if this run has the best validation."""
    client = tracker.client
    metric = run.params.competition.metric
    best = tracker.call("searching runs", lambda: client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`compkit.metric` = '{metric}'",
        order_by=[f"metrics.validation {'DESC' if greater else 'ASC'}"], max_results=1))
    if not best:
        return None
    top = best[0].data.metrics.get("validation")
    if best[0].info.run_id != tracker.run_id and top is not None and top != validation:
        log.info(f"MLflow: not registered; run {best[0].info.run_id} has the better validation "
                 f"{metric} ({top:.4f} vs {validation:.4f}).")
        return None
    name = _model_name(run)
    existing = tracker.call("reading model versions", lambda: client.search_model_versions(
        f"name = '{name}' and run_id = '{tracker.run_id}'"))
    if existing:  # 04_submit run again: this run is registered already
        return str(existing[0].version)
    tracker.log_files([folder], "model")
    artifact_uri = tracker.call("reading the run", lambda: client.get_run(
        tracker.run_id).info.artifact_uri)
    if artifact_uri is None:
        return None
    if tracker.call("reading the registered model", lambda: _has_model(client, name)) is False:
        tracker.call("registering the model", lambda: client.create_registered_model(
            name, description=f"compkit models for {run.params.competition.slug}"))
    version = tracker.call("registering the model", lambda: client.create_model_version(
        name, source=f"{artifact_uri}/model/{folder.name}", run_id=tracker.run_id,
        tags={"validation": f"{validation:.6g}", "metric": metric, "run": run.params.name}))
    return None if version is None else str(version.version)


def _existing_run(client: Any, run_id: str) -> str | None:
    """`run_id` if the store still has that run (it may have been deleted), else None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.run_id
    except MlflowException:
        return None


def _has_model(client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


def _model_name(run: RunDir) -> str:
    return run.params.competition.slug


def _model_folder(run: RunDir, model: str) -> Path | None:
    """The files that make a model: a transformer's export, or the model's folder (tfidf)."""
    for folder in (run.path / "models" / model / "model", run.path / "models" / model):
        if folder.is_dir() and any(folder.iterdir()):
            return folder
    return None


def _resolve_uri(run: RunDir) -> tuple[str, str | None]:
    """The tracking URI, and where a local sqlite store keeps its artifacts."""
    uri = run.params.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        db = run.path.parent.resolve() / "mlflow.db"
        uri = f"sqlite:///{db}"
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        # Without a location, MLflow puts artifacts in ./mlartifacts of the working directory.
        return uri, (db.parent / "mlartifacts").resolve().as_uri()
    return uri, None


def _unreachable(uri: str, timeout: float) -> str | None:
    """Why an http(s) tracking server cannot be used, or None (any HTTP answer is an answer)."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered (an error page, a login): the server is there
    except (OSError, ValueError) as err:
        return f"{type(err).__name__}: {getattr(err, 'reason', err)}"
    return None


def _experiment(client: Any, name: str, artifacts: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{artifacts}/{name}" if artifacts else None
    return client.create_experiment(name, artifact_location=location)


def _read_run_file(path: Path, uri: str) -> str | None:
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved.get("run_id") if saved.get("uri") == uri else None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_MAX_PARAM_CHARS]


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]
