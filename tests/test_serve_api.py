"""The REST API as a real `python -m kit serve` process on loopback: every status code, and load."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.serve_helpers import BuiltRun, Server, build_run, request, start_server

TOKEN = "test-token-not-a-secret"
LIMITS = ["--max-texts", "4", "--max-chars", "200", "--max-body-bytes", "4000"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> BuiltRun:
    return build_run(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def server(run: BuiltRun, tmp_path_factory):
    srv = start_server(run.path, tmp_path_factory.mktemp("log") / "server.log",
                       "--token", TOKEN, "--threads", "1", *LIMITS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def broken_server(run: BuiltRun, tmp_path_factory):
    """A run folder whose model file is gone: the server must start and say why."""
    folder = tmp_path_factory.mktemp("broken") / "topics"
    shutil.copytree(run.path, folder)
    (folder / "models" / "tfidf" / "pipeline.joblib").unlink()
    srv = start_server(folder, folder.parent / "server.log")
    yield srv
    srv.stop()


def post(server: Server, body, token: str | None = TOKEN, **kw):
    return request(server.url + "/predict", body, token=token, **kw)


def test_predict_answers_what_the_submission_says(server: Server, run: BuiltRun):
    health = request(server.url + "/health", token=TOKEN)
    assert health.status == 200
    assert health.body["model_loaded"] and health.body["run"] == "topics"
    assert health.body["model"] == "tfidf" and health.body["device"] == "cpu"
    assert health.body["threads"] == 1  # --threads 1

    texts = run.test_texts[:4]
    answer = post(server, {"texts": texts})
    assert answer.status == 200, answer.body
    body = answer.body
    assert body["run"] == "topics" and body["metric"] == "f1_micro" and body["model"] == "tfidf"
    assert body["rule"]["kind"] == "argmax" and body["rule"]["temperature"] > 0
    labels = run.submission.set_index("id")["label"]
    for i, pred in enumerate(body["predictions"]):
        scores = {s["label"]: s["score"] for s in pred["scores"]}
        assert [scores[name] for name in ("food", "sport", "tech")] == run.submit_probs[i].tolist()
        assert pred["labels"] == [labels[run.test["id"].iloc[i]]]

    one = post(server, {"text": texts[0], "top_k": 2}).body["predictions"]
    assert len(one) == 1 and len(one[0]["scores"]) == 2
    assert one[0]["scores"][0]["score"] >= one[0]["scores"][1]["score"]
    assert one[0]["scores"][0]["label"] == one[0]["labels"][0]


def test_401_without_the_token(server: Server):
    for token in (None, "wrong"):
        answer = post(server, {"text": "soup"}, token=token)
        assert answer.status == 401 and "Bearer" in answer.body["detail"]
        assert answer.headers.get("www-authenticate") == "Bearer"
        assert request(server.url + "/health", token=token).status == 401
    page = request(server.url + "/")
    assert page.status == 200 and "Ctrl+Enter" in page.body  # the page itself is public


@pytest.mark.parametrize(("body", "where"), [
    ({}, ["body"]),
    ({"txt": "soup"}, ["body", "txt"]),
    ({"texts": []}, ["body", "texts"]),
    ({"texts": ["soup", 5]}, ["body", "texts", 1]),
    ({"text": "soup", "top_k": 0}, ["body", "top_k"]),
    ({"text": "soup", "texts": ["soup"]}, ["body"]),
    ({"texts": [{"body": "soup"}]}, ["body", "texts", 0]),
])
def test_422_names_the_field(server: Server, body, where):
    answer = post(server, body)
    assert answer.status == 422, answer.body
    locs = [d["loc"][: len(where)] for d in answer.body["detail"]]
    assert where in locs, answer.body


def test_422_for_a_body_that_is_not_json(server: Server):
    answer = post(server, None, raw=b"{not json")
    assert answer.status == 422


def test_413_over_each_limit(server: Server):
    many = post(server, {"texts": ["soup"] * 5})
    assert many.status == 413 and "at most 4 per request" in many.body["detail"]
    long = post(server, {"texts": ["soup", "x" * 201]})
    assert long.status == 413 and "`texts[1]` has 201 characters" in long.body["detail"]
    big = post(server, None, raw=json.dumps({"text": "x" * 5000}).encode())
    assert big.status == 413 and "at most 4000" in big.body["detail"]

    # A chunked body announces no length: it is cut off while being read.
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    chunks = (b'{"text": "' if i == 0 else b"x" * 1000 for i in range(6))
    conn.request("POST", "/predict", body=chunks, encode_chunked=True,
                 headers={"Authorization": f"Bearer {TOKEN}",
                          "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 413 and b"at most 4000" in resp.read()
    conn.close()


def test_503_when_the_run_cannot_be_served(broken_server: Server):
    health = request(broken_server.url + "/health")
    assert health.status == 503 and not health.body["model_loaded"]
    assert "No fitted TF-IDF pipeline" in health.body["reason"]
    answer = request(broken_server.url + "/predict", {"text": "soup"})
    assert answer.status == 503 and "No fitted TF-IDF pipeline" in answer.body["detail"]


def test_load_8_clients_x_10_requests_all_succeed(server: Server, run: BuiltRun):
    before = request(server.url + "/health", token=TOKEN).body["served"]["requests"]
    failures: list[str] = []
    expected = run.submission.set_index("id")["label"]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
        try:
            for j in range(10):
                row = (k * 10 + j) % len(run.test_texts)
                conn.request("POST", "/predict",
                             body=json.dumps({"text": run.test_texts[row]}),
                             headers={"Authorization": f"Bearer {TOKEN}",
                                      "Content-Type": "application/json"})
                resp = conn.getresponse()
                body = json.loads(resp.read())
                want = [expected[run.test["id"].iloc[row]]]
                if resp.status != 200 or body["predictions"][0]["labels"] != want:
                    failures.append(f"client {k} request {j}: {resp.status} {body}")
        except Exception as err:  # a refused or dropped connection is a failure too
            failures.append(f"client {k}: {err!r}")
        finally:
            conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures[:3]
    assert time.monotonic() - start < 120
    served = request(server.url + "/health", token=TOKEN).body["served"]
    assert served["requests"] - before == 80
    assert served["calls"] <= served["requests"]


def test_server_log_names_the_run(server: Server):
    text = Path(server.log).read_text()
    assert "Loaded run 'topics': tfidf on cpu" in text and "micro-batching on" in text


def test_threads_below_one_is_refused(run: BuiltRun, capsys):
    from kit.cli import main

    assert main(["serve", str(run.path), "--threads", "0"]) == 2
    assert "--threads is 0; use >= 1" in capsys.readouterr().err
