"""Test helpers for kit.serve: a finished run built by the steps, and a real server process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tests.conftest import REPO, topic_rows, write_competition, write_params


@dataclass
class BuiltRun:
    """A finished run (02 train, 03 thresholds, 04 submit) and what 04_submit made of it."""

    path: Path
    test: pd.DataFrame  # the competition's test rows (id, text)
    test_texts: list[str]
    test_probs: Any  # the chosen model's raw test probabilities (predictions/<model>.npz)
    submit_probs: Any  # after the rule: what the submission used
    submission: pd.DataFrame


def build_run(root: Path, name: str = "topics", **params: Any) -> BuiltRun:
    """A project under `root` with the small `topics` competition, run through all steps."""
    from kit.core.rundir import open_run
    from kit.data.competition import load_competition
    from kit.steps.decide import fit_decision_rule
    from kit.steps.submit import make_submission
    from kit.steps.train import train_models

    (root / "params").mkdir(parents=True, exist_ok=True)
    (root / "params" / "base.yaml").write_text((REPO / "params" / "base.yaml").read_text())
    data = topic_rows(30)
    train = data.sample(frac=0.75, random_state=0).sort_values("id")
    write_competition(root / "data" / "topics", train, data.drop(train.index))
    write_params(root / "params" / f"{name}.yaml", {
        "extends": "base.yaml", "name": name,
        "competition": {"slug": "topics", "metric": "f1_micro"},
        "thresholds": {"bootstrap": 50}, **params,
    })
    run = open_run(f"params/{name}.yaml", root=root)
    comp = load_competition(run.params, root)
    train_models(run, comp)
    decision = fit_decision_rule(run, comp)
    result = make_submission(run, comp)
    preds = run.load_predictions(decision.model)
    return BuiltRun(run.path, comp.test, comp.test_texts, preds.test_probs,
                    decision.rule.probabilities(preds.test_probs), result.submission)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """`python -m kit serve` in its own process, on a free loopback port."""

    process: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)


def start_server(run_folder: Path, log: Path, *args: str, timeout: float = 90.0) -> Server:
    """Start the server and wait (bounded) until /health answers anything at all."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "KIT_SERVE_TOKEN": ""}
    handle = open(log, "w")  # noqa: SIM115 - the child writes to it until stop()
    process = subprocess.Popen(
        [sys.executable, "-m", "kit", "serve", str(run_folder), "--port", str(port), *args],
        stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=run_folder.parent,
    )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            request(server.url + "/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not answer /health within {timeout} s:\n{log.read_text()}")


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def request(url: str, body: Any = None, token: str | None = None, raw: bytes | None = None,
            timeout: float = 30) -> Answer:
    """One HTTP request (JSON body when given); any status comes back as an Answer."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text, status, head = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        text, status, head = err.read(), err.code, dict(err.headers)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text.decode(errors="replace")
    return Answer(status, parsed, head)
