"""Benchmark `kit serve` on loopback: requests/s and latency from 1 to 32 clients, batching on/off.

For each mode (micro-batching on, then off: `--no-batching`) a real server process is started on
127.0.0.1; for each number of concurrent clients, every client (a thread with one keep-alive
connection) sends `--requests` requests of `--texts-per-request` texts each, one after the other.
Printed per row: requests/s, p50/p95/p99 latency, failed requests, and texts per model call (from
/health). The ceiling is the single-process predict throughput (`Predictor.predict` in batches
of the server's micro-batch size, no HTTP, on the same `--backend`), measured before the served
load and again after it (the mean is the ceiling). Per row also
the CPU milliseconds per request of the server process (model included) and of the load
generator (this process), so a reader sees whether the clients took the cores. The last line is
`served / predict = Y`: 32 clients with micro-batching over the predict throughput (texts/s),
after a line with the p99 latency at that load.

    .venv/bin/python bench/bench_serve.py outputs/demo --input data/trec-questions/test.csv
    .venv/bin/python bench/bench_serve.py --tiny --clients 1,2 --requests 5   # check it runs

`--tiny` builds a tiny TF-IDF run in a temporary folder (the tests' helper). The clients share
the machine with the server: on 2 cores the figures are a lower bound. Run it on an otherwise
idle machine; timings swing with the load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclass
class Row:
    """One load level of one mode."""

    batching: bool
    clients: int
    requests: int
    failed: int
    seconds: float
    latencies_ms: np.ndarray
    texts_per_call: float
    server_cpu_s: float = 0.0  # the server process's CPU seconds (model and HTTP) at this level
    client_cpu_s: float = 0.0  # this process's (the load generator's) CPU seconds

    @property
    def per_second(self) -> float:
        return (self.requests - self.failed) / self.seconds


def load_texts(run: Path, input_path: Path, n: int) -> list[str]:
    """The first `n` texts of the input file, rendered as the run renders them."""
    from kit.serve.predict_file import read_chunks
    from kit.serve.predictor import Predictor

    predictor = Predictor.load(run, backend="torch")
    comp = predictor.params.competition
    chunk = next(read_chunks(input_path, n, comp.csv_delimiter, comp.encoding))
    return predictor.render(chunk.head(n), str(input_path))


def throughput(predictor, texts: list[str], size: int, min_seconds: float) -> float:
    """Texts/s of `Predictor.predict` on calls of `size` texts, for about `min_seconds`."""
    done, start = 0, time.perf_counter()
    while True:
        for i in range(0, len(texts), size):
            done += len(predictor.predict(texts[i : i + size]).labels)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return done / elapsed


def ceiling(predictor, texts: list[str], batch: int, min_seconds: float) -> tuple[float, float]:
    """Texts/s in one process without HTTP: in batches of `batch`, and one text per call."""
    predictor.predict(texts[:batch])  # warm-up
    return (throughput(predictor, texts, batch, min_seconds),
            throughput(predictor, texts, 1, min_seconds))


def start_server(run: Path, batching: bool, max_queue: int, log: Path, backend: str = "auto"):
    """The real `python -m kit serve` on a free loopback port (the tests' helper)."""
    from tests.serve_helpers import start_server as start

    args = ["--max-queue", str(max_queue), "--max-texts", "1024", "--backend", backend]
    return start(run, log, *args, *([] if batching else ["--no-batching"]), timeout=300)


def health(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/health")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, texts: list[str], clients: int, requests: int, per_request: int,
         batching: bool, server_pid: int = 0) -> Row:
    """`clients` threads, each sending `requests` requests in turn on its own connection."""
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()
    before = health(port)["served"]
    server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine, bad = [], 0
        for j in range(requests):
            start = (k * requests + j) * per_request
            batch = [texts[(start + i) % len(texts)] for i in range(per_request)]
            body = json.dumps({"texts": batch})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            mine.append((time.perf_counter() - t0) * 1000)
            bad += not ok
        conn.close()
        with lock:
            latencies.extend(mine)
            failed[0] += bad

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    server_cpu, client_cpu = cpu_seconds(server_pid) - server_cpu, time.process_time() - client_cpu
    after = health(port)["served"]
    calls = max(1, after["calls"] - before["calls"])
    return Row(batching, clients, clients * requests, failed[0], seconds,
               np.array(latencies), (after["texts"] - before["texts"]) / calls, server_cpu,
               client_cpu)


def print_table(rows: list[Row], per_request: int, batch_ceiling: float, single: float) -> None:
    print(f"\n{'batching':>8} {'clients':>7} {'requests':>8} {'failed':>6} {'req/s':>8} "
          f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'texts/call':>10} {'server CPU':>10} "
          f"{'client CPU':>10}")
    for r in rows:
        p50, p95, p99 = np.percentile(r.latencies_ms, [50, 95, 99])
        print(f"{'on' if r.batching else 'off':>8} {r.clients:>7} {r.requests:>8} {r.failed:>6} "
              f"{r.per_second:>8.1f} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} "
              f"{r.texts_per_call:>10.1f} {1000 * r.server_cpu_s / r.requests:>7.1f} ms "
              f"{1000 * r.client_cpu_s / r.requests:>7.1f} ms")
    print("(server/client CPU: CPU milliseconds per request, the model's included in the server's)")
    print(f"\npredict throughput, one process, no HTTP: {batch_ceiling:.1f} texts/s in batches "
          f"(the ceiling, mean of before and after), {single:.1f} texts/s one text per call")
    top = [r for r in rows if r.batching and r.clients == max(x.clients for x in rows)]
    if top:
        served = top[0].per_second * per_request
        p99 = np.percentile(top[0].latencies_ms, 99)
        print(f"{top[0].clients} clients with micro-batching: {served:.1f} texts/s served, p99 "
              f"{p99:.0f} ms; predict: {batch_ceiling:.1f} texts/s")
        print(f"served / predict = {served / batch_ceiling:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="a finished run folder (outputs/<run>)")
    parser.add_argument("--input", help="CSV/JSON lines with the run's text columns")
    parser.add_argument("--tiny", action="store_true", help="build a tiny TF-IDF run to check")
    parser.add_argument("--clients", default="1,2,4,8,16,32", help="comma-separated")
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--texts", type=int, default=512, help="distinct texts to send")
    parser.add_argument("--ceiling-seconds", type=float, default=5.0)
    parser.add_argument("--modes", default="on,off", help="micro-batching on, off, or both")
    parser.add_argument("--backend", default="auto", help="auto, torch, onnx, onnx-int8")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    modes = [m.strip() == "on" for m in args.modes.split(",")]

    from kit.core.logs import show_logs
    from kit.serve.settings import BatchingConfig

    show_logs()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    if args.tiny:
        from tests.serve_helpers import build_run

        built = build_run(work / "project")
        run = built.path
        input_path = work / "texts.csv"
        built.test[["id", "text"]].to_csv(input_path, index=False)
    elif args.run and args.input:
        run, input_path = Path(args.run).resolve(), Path(args.input)
    else:
        parser.error("give a run folder and --input, or --tiny")
    texts = load_texts(run, input_path, args.texts)
    batch = BatchingConfig().max_texts
    print(f"run {run.name}: {len(texts)} texts; machine: {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}")
    from kit.serve.predictor import Predictor

    predictor = Predictor.load(run, backend=args.backend)
    batch_ceiling, single = ceiling(predictor, texts, batch, args.ceiling_seconds)

    rows: list[Row] = []
    for batching in modes:
        server = start_server(run, batching, max(clients) * 2, work / f"server-{batching}.log",
                              args.backend)
        port = int(server.url.rsplit(":", 1)[1])
        try:
            load(port, texts, 1, 3, args.texts_per_request, batching)  # warm-up
            for c in clients:
                rows.append(load(port, texts, c, args.requests, args.texts_per_request, batching,
                                 server.process.pid))
                r = rows[-1]
                print(f"batching {'on' if batching else 'off'}, {c} clients: "
                      f"{r.per_second:.1f} req/s, {r.failed} failed", flush=True)
        finally:
            server.stop()
    # Measured again after the load, and averaged: on a shared machine the load from elsewhere
    # moves during the run, and the ratio should compare like with like.
    after, _ = ceiling(predictor, texts, batch, args.ceiling_seconds)
    print(f"predict throughput before the served load {batch_ceiling:.1f}, after {after:.1f} "
          f"texts/s; load average now {os.getloadavg()[0]:.2f}")
    print_table(rows, args.texts_per_request, (batch_ceiling + after) / 2, single)


if __name__ == "__main__":
    main()
