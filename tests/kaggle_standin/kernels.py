"""The local Kaggle's kernel runner: a pushed notebook really runs in a sandbox laid out as Kaggle.

On `kernels push` (the stand-in's `SaveKernel`, body fields from kagglesdk's
`ApiSaveKernelRequest`: `text`, `datasetDataSources`, `competitionDataSources`,
`kernelDataSources`, `modelDataSources`, `enableInternet`, `machineShape`) the notebook runs with
papermill in `<root>/sandbox/<owner>/<slug>/`, one session at a time per kernel, as Kaggle runs a
pushed version ("Save & Run All", a batch session):

- `input/` is /kaggle/input, laid out as Kaggle mounts its sources: a competition at
  `input/<competition>`, a dataset at `input/<dataset-slug>` (its folders uploaded zipped with
  `--dir-mode zip` unpacked, as Kaggle does on its side), a notebook's output (its latest version)
  at `input/<kernel-slug>`, a model at `input/models/<owner>/<model>/<framework>/<variation>/
  <version>` (Kaggle/kagglehub `kaggle_cache_resolver.py`: sources mount under
  `/kaggle/input/<mountSlug>`; PITFALLS.md: the Models mount depth). The kit finds it through
  `KIT_KAGGLE_INPUT`, since /kaggle is a real root path here.
- `working/` is /kaggle/working (`KIT_KAGGLE_WORKING`), the notebook's cwd; it starts empty each
  session and is what `kernels output` serves afterwards (kept per version).
- The environment a Kaggle notebook has: `KAGGLE_KERNEL_RUN_TYPE=Batch` (kagglehub decides "in a
  Kaggle notebook" on it), `KAGGLE_URL_BASE`, `KAGGLE_DATA_PROXY_URL` (kagglehub `clients.py`),
  and Colab's `COLAB_RELEASE_TAG`, which the image inherits from the Colab base image it is built
  on (kagglehub PR #230; Kaggle/docker-python's Dockerfile). The caller's `KAGGLE_*` credentials
  and `COMPKIT_ROOT` are not passed on.
- Internet off (`enableInternet` false): as root the notebook runs in its own network namespace
  (`unshare -n`, loopback only, so nothing outside answers); otherwise a sitecustomize refuses
  every socket connect that is not to loopback on a port above 1023 (the kernel's own channels).
- A wall-clock limit (`time_limit_seconds`, Kaggle's 12 h / 9 h session limit scaled down): past
  it the whole process tree is killed and the version ends `ERROR`; what the notebook wrote to
  /kaggle/working so far is still served.
- `kernels status` follows kagglesdk's `KernelWorkerStatus`: QUEUED, RUNNING, then COMPLETE or
  ERROR (with `failureMessage`).

`session_env` adds variables to every session (a test's control, not a Kaggle feature), e.g.
`KIT_STANDIN_CLOCK_SECONDS`: the kit's time-budget clock (`kit.models.hf.budget.now`) then reads
N more seconds at each call, so a training session stops at a known step, not by a timing race.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import psutil

# Kaggle's variables in a pushed (batch) session; see the module docstring for their sources.
KAGGLE_SESSION_ENV = {
    "KAGGLE_KERNEL_RUN_TYPE": "Batch",
    "KAGGLE_URL_BASE": "https://www.kaggle.com",
    "KAGGLE_DATA_PROXY_URL": "https://dp.kaggle.net",
    "KAGGLE_KERNEL_INTEGRATIONS": "",
    "COLAB_RELEASE_TAG": "release-colab-external_20250424-060100_RC00",
}
# The parent's variables a Kaggle session does not have.
NOT_PASSED = ("KAGGLE_", "COLAB_", "COMPKIT_ROOT", "KIT_PROGRESS_FILE")

SITECUSTOMIZE = '''"""The local Kaggle's session hooks: internet switch, budget clock (tests)."""
import os
import sys

if os.environ.get("KIT_STANDIN_OFFLINE") == "1":
    import socket

    _connect = socket.socket.connect

    def _refuse_outside(self, address, *args):
        host, port = (address[0], address[1]) if isinstance(address, tuple) else ("", 0)
        if self.family in (socket.AF_INET, socket.AF_INET6) and not (
                host in ("127.0.0.1", "::1", "localhost") and int(port) > 1023):
            raise ConnectionRefusedError(111, "internet is off in this Kaggle session")
        return _connect(self, address, *args)

    socket.socket.connect = _refuse_outside

_step = float(os.environ.get("KIT_STANDIN_CLOCK_SECONDS") or 0)
if _step:
    import importlib.abc

    class _Clock:
        seconds = 0.0

        def __call__(self):
            self.seconds += _step
            return self.seconds

    class _PatchBudget(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "kit.models.hf.budget":
                return None
            sys.meta_path.remove(self)
            import importlib.util

            spec = importlib.util.find_spec(name)
            load = spec.loader.exec_module

            def exec_module(module):
                load(module)
                module.now = _Clock()

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _PatchBudget())
'''


@dataclass
class KernelVersion:
    """One pushed version of a notebook and its session."""

    ref: str  # owner/slug
    number: int
    status: str = "QUEUED"
    failure: str = ""
    output: Path | None = None  # the version's /kaggle/working, served by `kernels output`
    log: list[dict] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)


class KernelRunner:
    """Runs pushed notebooks (see the module docstring); one per stand-in."""

    def __init__(self, root: Path, competitions: dict[str, Path] | None = None,
                 models: dict[str, Path] | None = None, time_limit_seconds: float = 600.0,
                 session_env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.competitions = dict(competitions or {})  # slug -> folder of its files
        self.models = dict(models or {})  # owner/model/framework/variation/version -> folder
        self.time_limit_seconds = time_limit_seconds
        self.session_env = dict(session_env or {})
        self.versions: dict[str, list[KernelVersion]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the stand-in's hooks

    def answer(self, method: str, body: dict, datasets: dict[str, dict[str, bytes]]
               ) -> tuple[int, dict] | None:
        """The answer to a kernels call this runner handles, else None."""
        if method == "SaveKernel":
            version = self.push(body, datasets)
            return 200, {"ref": f"/code/{version.ref}", "url": f"http://localhost/code/{version.ref}",
                         "versionNumber": version.number, "error": ""}
        ref = f"{body.get('userName')}/{body.get('kernelSlug')}"
        if ref not in self.versions:
            return None
        latest = self.versions[ref][-1]
        if method == "GetKernelSessionStatus":
            answer = {"status": latest.status}
            if latest.failure:
                answer["failureMessage"] = latest.failure
            return 200, answer
        if method == "ListKernelSessionOutput":
            files = []
            if latest.output is not None and latest.done.is_set():
                files = [{"fileName": name, "url": "http://localhost/files/kernel/"
                          f"{quote(ref)}/{latest.number}/{quote(name)}"}
                         for name in _files(latest.output)]
            return 200, {"files": files, "log": json.dumps(latest.log)}
        return None

    def file(self, path: str) -> bytes | None:
        """The bytes behind an output url `/files/kernel/<owner>/<slug>/<version>/<name>`."""
        parts = path.split("/", 6)
        if len(parts) < 7 or f"{parts[3]}/{parts[4]}" not in self.versions:
            return None
        version = self.versions[f"{parts[3]}/{parts[4]}"][int(parts[5]) - 1]
        if version.output is None:
            return None
        target = (version.output / unquote(parts[6])).resolve()
        if not target.is_relative_to(version.output.resolve()):
            return None
        return target.read_bytes() if target.is_file() else None

    # ------------------------------------------------------------------ sessions

    def push(self, body: dict, datasets: dict[str, dict[str, bytes]]) -> KernelVersion:
        """Register the next version of the notebook and start its session in a thread."""
        ref = body.get("slug", "")
        with self._lock:
            earlier = self.versions.setdefault(ref, [])
            version = KernelVersion(ref, len(earlier) + 1, sources={
                key: list(body.get(key) or []) for key in (
                    "competitionDataSources", "datasetDataSources", "kernelDataSources",
                    "modelDataSources")})
            # A notebook attached as a source gives its latest version *before* this push.
            kernels = {src: self.versions[src][-1] for src in version.sources["kernelDataSources"]
                       if self.versions.get(src)}
            earlier.append(version)
        thread = threading.Thread(target=self._session, daemon=True,
                                  args=(version, body, datasets, kernels))
        thread.start()
        return version

    def wait(self, ref: str, timeout: float = 900.0) -> KernelVersion:
        """The latest version of `ref` once its session ended (tests)."""
        version = self.versions[ref][-1]
        if not version.done.wait(timeout):
            raise TimeoutError(f"{ref} v{version.number} still {version.status}")
        return version

    def _session(self, version: KernelVersion, body: dict,
                 datasets: dict[str, dict[str, bytes]], kernels: dict[str, KernelVersion]) -> None:
        try:
            self._run(version, body, datasets, kernels)
        except Exception as exc:  # the stand-in's own failure: say it as the kernel's error
            version.status, version.failure = "ERROR", f"stand-in runner failed: {exc!r}"
        finally:
            version.done.set()

    def _run(self, version: KernelVersion, body: dict, datasets: dict[str, dict[str, bytes]],
             kernels: dict[str, KernelVersion]) -> None:
        owner, slug = version.ref.split("/", 1)
        box = self.root / "sandbox" / owner / slug
        shutil.rmtree(box, ignore_errors=True)
        inputs, working, site = box / "input", box / "working", box / "site"
        for folder in (inputs, working, site):
            folder.mkdir(parents=True)
        self._lay_out(inputs, version.sources, datasets, kernels)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        notebook = box / "notebook.ipynb"
        notebook.write_text(body.get("text") or "")
        internet = bool(body.get("enableInternet"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_PASSED)}
        env.update(KAGGLE_SESSION_ENV)
        env.update({"KIT_KAGGLE_INPUT": str(inputs), "KIT_KAGGLE_WORKING": str(working),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(site),
                                                                env.get("PYTHONPATH")])),
                    "PYTHONUNBUFFERED": "1"})
        env.update(self.session_env)
        command = [sys.executable, "-m", "papermill", str(notebook), str(box / "executed.ipynb"),
                   "--cwd", str(working), "-k", "python3", "--log-output", "--no-progress-bar"]
        if not internet:
            if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
                command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                           *command]
            else:
                env["KIT_STANDIN_OFFLINE"] = "1"
        version.status = "RUNNING"
        started = time.monotonic()
        proc = subprocess.Popen(command, env=env, cwd=working, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        reader = threading.Thread(target=_read_log, args=(proc, version, started), daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=self.time_limit_seconds)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            code = None
        reader.join(timeout=30)
        version.output = self.root / "outputs" / owner / slug / str(version.number)
        shutil.rmtree(version.output, ignore_errors=True)
        shutil.copytree(working, version.output, symlinks=True)
        if code == 0:
            version.status = "COMPLETE"
        elif code is None:
            version.status = "ERROR"
            version.failure = (f"Your notebook was stopped because it exceeded the max allowed "
                               f"execution duration ({self.time_limit_seconds:g} s here).")
        else:
            version.status = "ERROR"
            version.failure = "Your notebook hit an unhandled error while executing."

    def _lay_out(self, inputs: Path, sources: dict[str, list[str]],
                 datasets: dict[str, dict[str, bytes]], kernels: dict[str, KernelVersion]) -> None:
        """/kaggle/input for the sources (see the module docstring for the layout)."""
        for slug in sources["competitionDataSources"]:
            if slug not in self.competitions:
                raise KeyError(f"the stand-in has no competition {slug!r}")
            shutil.copytree(self.competitions[slug], inputs / slug)
        for ref in sources["datasetDataSources"]:
            dest = inputs / ref.split("/")[1]
            dest.mkdir(parents=True, exist_ok=True)
            for name, data in datasets.get(ref, {}).items():
                if name.endswith(".zip") and zipfile.is_zipfile(io.BytesIO(data)):
                    with zipfile.ZipFile(io.BytesIO(data)) as zf:
                        zf.extractall(dest / name[: -len(".zip")])
                else:
                    (dest / name).write_bytes(data)
        for ref, version in kernels.items():
            if version.output is not None:
                shutil.copytree(version.output, inputs / ref.split("/")[1], symlinks=True)
        for handle in sources["modelDataSources"]:
            shutil.copytree(self.models[handle], inputs / "models" / handle)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _read_log(proc: subprocess.Popen, version: KernelVersion, started: float) -> None:
    """The session's output as Kaggle's log: a JSON list of {stream_name, time, data}."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        version.log.append({"stream_name": "stdout", "time": round(time.monotonic() - started, 3),
                            "data": raw.decode("utf-8", errors="replace")})


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the session and every process it started (the kernel runs in its own session)."""
    try:
        family = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            continue
    proc.wait()
