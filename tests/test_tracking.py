"""MLflow tracking of a run: a local sqlite store read back (params, a training curve, artifacts,
the registered model), a tracking server that is not there or fails mid-run (one warning, the
run completes), and the `tracking` params."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
import torch
from serve_helpers import build_run, free_port

from kit.config.params import TrackingParams
from kit.errors import KitError
from kit.tracking import RUN_FILE

mlflow = pytest.importorskip("mlflow")

WARNING = "this run goes on without tracking"


@pytest.fixture(autouse=True)
def no_env_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


def tiny_transformer(model: Path) -> dict:
    return {"model": str(model), "max_length": 32, "epochs": 2.0, "batch_size": 8,
            "eval_steps": 4, "save_steps": 8, "lr": 2e-2, "save_total_limit": 1}


def test_run_is_tracked_in_a_local_sqlite_store_and_read_back(tmp_path, tiny_model, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        built = build_run(tmp_path, models=["tfidf", "transformer"],
                          transformer=tiny_transformer(tiny_model))
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert WARNING not in out and "MLflow: run " in out
    db = tmp_path / "outputs" / "mlflow.db"  # the default: beside the run folders, no server
    assert db.is_file() and (tmp_path / "outputs" / "mlartifacts").is_dir()
    saved = json.loads((built.path / RUN_FILE).read_text())
    assert saved["uri"] == f"sqlite:///{db}" and saved["experiment"] == "topics"

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    run = client.get_run(saved["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "topics"
    params = run.data.params
    assert params["competition.slug"] == "topics" and params["transformer.lr"] == "0.02"
    assert params["models"] == '["tfidf", "transformer"]' and params["tracking.enabled"] == "auto"
    metrics = json.loads((built.path / "metrics.json").read_text())
    assert run.data.metrics["validation"] == pytest.approx(metrics["validation"])
    assert run.data.metrics["tfidf/val_f1_micro"] == pytest.approx(
        metrics["models"]["tfidf"]["f1_micro"])
    # The training curve, one point per logged optimizer step, as Trainer logged it.
    history = json.loads((built.path / "models" / "transformer" /
                          "transformer_history.json").read_text())
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                       "transformer/loss"))
    assert loss == [(h["step"], pytest.approx(h["loss"])) for h in history if "loss" in h]
    assert len(loss) > 5
    evals = client.get_metric_history(run.info.run_id, "transformer/eval_f1_micro")
    assert sorted(m.step for m in evals) == [h["step"] for h in history if "eval_loss" in h]
    assert len(evals) >= 3
    # The run folder's files, downloaded again, are the files.
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "params.yaml", "decision_rule.json", "submission.csv",
            "plots"} <= names
    got = client.download_artifacts(run.info.run_id, "decision_rule.json", str(tmp_path))
    assert Path(got).read_text() == (built.path / "decision_rule.json").read_text()
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"confusion_matrix.png", "training_curves.png"} <= plots
    # The submitted model is registered under the competition slug, from the run's artifacts.
    (version,) = client.search_model_versions("name = 'topics'")
    assert version.run_id == run.info.run_id and str(version.version) == "1"
    submitted = metrics["submission"]["model"]
    assert version.source.endswith("/model/model" if submitted == "transformer" else
                                   f"/model/{submitted}")
    assert version.tags["validation"] == f"{metrics['validation']:.6g}"


def test_only_the_best_run_of_the_experiment_is_registered(tmp_path, capsys):
    db = tmp_path / "store" / "mlflow.db"
    common = {"competition": {"slug": "topics", "metric": "log_loss"},
              "tracking": {"uri": f"sqlite:///{db}"}}
    good = build_run(tmp_path / "a", "good", **common)
    worse = build_run(tmp_path / "b", "worse", tfidf={"C": 0.01}, **common)
    assert "not registered; run " in capsys.readouterr().out
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    versions = client.search_model_versions("name = 'topics'")
    good_id = json.loads((good.path / RUN_FILE).read_text())["run_id"]
    assert [v.run_id for v in versions] == [good_id]
    worse_id = json.loads((worse.path / RUN_FILE).read_text())["run_id"]
    assert (client.get_run(worse_id).data.metrics["validation"]
            > client.get_run(good_id).data.metrics["validation"])  # log loss: lower is better


def test_unreachable_server_warns_once_and_the_run_completes(tmp_path, tiny_model, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    built = build_run(tmp_path, models=["tfidf", "transformer"],
                      transformer=tiny_transformer(tiny_model),
                      tracking={"uri": uri, "timeout_seconds": 2})
    out = capsys.readouterr().out
    # Once when training opens the run, once when the submission step does; nothing else.
    assert out.count(WARNING) == 2
    assert f"MLflow tracking server {uri} did not answer within 2 s" in out
    assert len(built.submission) == len(built.test) and not (built.path / RUN_FILE).exists()
    metrics = json.loads((built.path / "metrics.json").read_text())
    assert set(metrics["models"]) == {"tfidf", "transformer"}


class FailingApi(http.server.BaseHTTPRequestHandler):
    """Answers the health check, then refuses every MLflow call (a server that breaks)."""

    def _answer(self) -> None:
        ok = self.path.rstrip("/").endswith("/health")
        body = b"OK" if ok else json.dumps({"error_code": "BAD_REQUEST",
                                            "message": "store unavailable"}).encode()
        self.send_response(200 if ok else 400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, *args) -> None:
        pass


def test_server_failing_after_the_check_warns_once_and_the_run_completes(tmp_path, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailingApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        built = build_run(tmp_path, tracking={"uri": uri})
    finally:
        server.shutdown()
    out = capsys.readouterr().out
    assert out.count(WARNING) == 2 and "store unavailable" in out
    assert len(built.submission) == len(built.test)


def test_tracking_params(tmp_path, monkeypatch):
    assert TrackingParams().enabled == "auto"
    with pytest.raises(KitError, match=r"tracking.timeout_seconds is 0"):
        TrackingParams(timeout_seconds=0)
    # Off: no store is made.
    built = build_run(tmp_path / "off", tracking={"enabled": False})
    assert not (tmp_path / "off" / "outputs" / "mlflow.db").exists()
    assert not (built.path / RUN_FILE).exists()
    # Required but not installed: refused with the fix.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(KitError, match=r"tracking.enabled is true but mlflow is not installed"):
        build_run(tmp_path / "required", tracking={"enabled": True})
