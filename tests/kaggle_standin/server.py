"""Stand-in Kaggle API on 127.0.0.1:80 that records requests, for driving the real `kaggle` CLI.

With `KAGGLE_API_ENVIRONMENT=LOCALHOST` the kaggle 2.2.x CLI sends every API call as
`POST http://localhost/api/v1/<Service>/<Method>` with a JSON body (camelCase field names, see
kagglesdk/*/types). A file submission is:

1. `security.OAuthService/IntrospectToken` {"token"}      (only when an access token is used)
2. `competitions.CompetitionApiService/StartSubmissionUpload`
       {"competitionName", "contentLength", "lastModifiedEpochSeconds", "fileName"}
       -> {"token", "createUrl"}
3. `PUT <createUrl>` with the file's bytes (200/201 = uploaded)
4. `competitions.CompetitionApiService/CreateSubmission`
       {"competitionName", "blobFileTokens", "submissionDescription"} -> {"message", "ref"}
5. `competitions.CompetitionApiService/GetSubmissionLimits` {"competitionName"}
       -> {"numAllowedNow", ...}   (failures ignored by the CLI)

A download is `DownloadDataFiles` {"competitionName"} answered by a redirect to the zip.

Kernels (kaggle 2.2.x, kaggle/api/kaggle_api_extended.py): `kernels push` is one
`kernels.KernelsApiService/SaveKernel` {"slug", "newTitle", "text", "language", "kernelType",
"isPrivate", "enableGpu", "enableInternet", "datasetDataSources", "competitionDataSources",
"machineShape", ...} -> {"ref", "url", "versionNumber", "error"}; `kernels status` is
`GetKernelSessionStatus` {"userName", "kernelSlug"} -> {"status": <KernelWorkerStatus name>,
"failureMessage"}; `kernels output` is `ListKernelSessionOutput` -> {"files": [{"fileName",
"url"}], "log"} and a plain GET of each url.

Datasets: `datasets create` asks `datasets.DatasetApiService/GetDatasetStatus` (an HTTP error
means "free to create"), uploads each file (each folder zipped with --dir-mode zip) with
`blobs.BlobApiService/StartBlobUpload` {"type", "name", "contentLength", ...} -> {"token",
"createUrl"} and a PUT, then `CreateDataset` {"ownerSlug", "slug", "title", "files": [{"token"}],
...} -> {"ref", "url", "status", "error"}. `datasets version` uploads the same way, then
`CreateDatasetVersion` {"ownerSlug", "datasetSlug", "body": {"versionNotes", "files", ...}}.
A code-competition submission (`competitions submit -k owner/kernel -v N`) is one
`competitions.CompetitionApiService/CreateCodeSubmission` {"competitionName", "kernelSlug",
"kernelVersion", "fileName", "submissionDescription"} -> {"message", "ref"}.

Waiting for a dataset (kaggle 2.2.4, `dataset_status`): `kaggle datasets status owner/slug
--format json` is `GetDatasetStatus` {"ownerSlug", "datasetSlug"} -> {"status": a
`DatabundleVersionStatus` name: not_yet_persisted, blobs_received, blobs_decompressed,
blobs_copied_to_sds, individual_blobs_compressed, ready, failed, deleted, reprocessing
(kagglesdk/datasets/types/dataset_enums.py)}, then `GetDataset` -> {"currentVersionNumber"}; the
CLI prints {"status": ..., "current_version_number": ...}. A new version is processed for a while
(`dataset_statuses` plans the answers); meanwhile `SaveKernel` answers the dataset in
`invalidDatasetSources` and the CLI prints "The following are not valid dataset sources and could
not be added to the kernel: [...]" and exits 0 (kaggle_api_extended.py, `kernels_push_cli`).
Kernel and model sources Kaggle does not know come back in `invalidKernelSources` and
`invalidModelSources` (ApiSaveKernelResponse in kagglesdk/kernels/types/kernels_api_service.py);
the CLI prints the first but not the second. `kaggle kernels pull owner/slug/N -m` is `GetKernel`
{"userName", "kernelSlug": "slug/N"} -> {"metadata": ApiKernelMetadata (what the version has
attached: "datasetDataSources", "modelDataSources", ...), "blob": {"source", "language",
"kernelType", "slug"}}, written by the CLI as kernel-metadata.json.

Submissions (`kaggle competitions submissions <slug> --csv`) are `ListSubmissions`
{"competitionName", ...} -> {"submissions": [ApiSubmission: "ref", "fileName", "date",
"description", "status" (SubmissionStatus PENDING/COMPLETE/ERROR), "publicScore",
"privateScore", ...]}; the CLI prints the columns of `submission_fields`: ref, fileName, date,
description, status, publicScore, privateScore. Every submission the stand-in receives is listed,
newest first, with the score `public_scores` holds for its competition (kept in order).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaggle_standin.kernels import KernelRunner

API = "/api/v1/"
SUBMISSION_MESSAGE = "Successfully submitted to Standin Text Competition"
# What Kaggle says with these statuses (from kaggle-cli issues #21, #530, #555).
KAGGLE_MESSAGES = {
    401: "Unauthenticated",
    403: "Permission 'competitions.participate' was denied",
    404: "NotFound",
}


@dataclass
class Recorded:
    """One request the stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def endpoint(self) -> str:
        """`Service/Method` for API calls, the raw path otherwise."""
        return self.path[len(API) :] if self.path.startswith(API) else self.path

    def json(self) -> dict:
        return json.loads(self.body or b"{}")


@dataclass
class StandinState:
    """What the stand-in has seen and how it should misbehave."""

    requests: list[Recorded] = field(default_factory=list)
    # endpoint (e.g. "competitions.CompetitionApiService/CreateSubmission" or "upload") ->
    # an HTTP status to answer with, or "drop" to close the connection without an answer.
    failures: dict[str, int | str] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    zip_bytes: bytes = b""
    username: str = "standin-user"
    blob_names: dict[str, str] = field(default_factory=dict)  # upload token -> file name
    datasets: dict[str, int] = field(default_factory=dict)  # owner/slug -> versions made
    # owner/slug -> the statuses GetKernelSessionStatus answers in turn (the last one repeats)
    kernel_statuses: dict[str, list[str]] = field(default_factory=dict)
    kernel_versions: dict[str, int] = field(default_factory=dict)
    kernel_files: dict[str, bytes] = field(default_factory=lambda: {
        "submission.csv": b"id,label\n1,spam\n"})
    kernel_log: str = '[{"stream_name":"stdout","time":1.0,"data":"all good\\n"}]'
    # kernel slug -> its own output files (served instead of kernel_files), e.g. the image probe's
    kernel_outputs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    failure_message: str = ""
    # A runner (kernels.py) makes pushed notebooks really run; None: the recorded answers above.
    runner: KernelRunner | None = None
    dataset_files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # ref -> name -> bytes
    # owner/slug -> the statuses GetDatasetStatus answers in turn for its newest version (the
    # last one repeats); a dataset with no plan is "ready".
    dataset_statuses: dict[str, list[str]] = field(default_factory=dict)
    models: set[str] = field(default_factory=set)  # model handles Kaggle knows
    # owner/kernel -> {version: {dataset ref: the dataset version attached}}
    kernel_sources: dict[str, dict[int, dict[str, int]]] = field(default_factory=dict)
    kernel_models: dict[str, dict[int, list[str]]] = field(default_factory=dict)  # attached
    submissions: dict[str, list[dict]] = field(default_factory=dict)  # competition -> newest first
    public_scores: dict[str, list[str]] = field(default_factory=dict)  # competition -> scores
    upload_names: dict[str, str] = field(default_factory=dict)  # submission blob -> file name

    def reset(self) -> None:
        """Forget every request, plan and object: the state of a fresh stand-in."""
        fresh = StandinState()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def endpoints(self) -> list[str]:
        return [r.endpoint for r in self.requests]

    def find(self, endpoint: str) -> Recorded:
        matches = [r for r in self.requests if r.endpoint == endpoint]
        assert matches, f"no request to {endpoint}; got {self.endpoints()}"
        return matches[-1]


def _make_handler(state: StandinState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # keep pytest output quiet
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload: dict | bytes, headers: dict | None = None) -> None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            ctype = "application/zip" if isinstance(payload, bytes) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            body = self._read_body()
            rec = Recorded(self.command, self.path, dict(self.headers.items()), body)
            state.requests.append(rec)
            key = "upload" if self.path.startswith("/upload/") else rec.endpoint
            failure = state.failures.get(key)
            if failure == "drop":
                self.close_connection = True  # no status line at all: "Connection aborted"
                return
            if isinstance(failure, int) and failure >= 500:
                # A front-end/proxy failure: an HTML page, so requests reports "500 Server Error".
                self.send_response(failure)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if isinstance(failure, int):
                # Kaggle's API error shape: JSON {"code", "message"}. The message echoes the
                # caller's credential, as a careless server might, to test redaction.
                auth = rec.headers.get("Authorization", "").removeprefix("Bearer ")
                reason = KAGGLE_MESSAGES.get(failure, "stand-in failure")
                message = f"{reason} (stand-in {failure} for credential {auth})"
                self._send(failure, {"code": failure, "message": message})
                return
            self._answer(rec, body)

        def _answer(self, rec: Recorded, body: bytes) -> None:
            ep = rec.endpoint
            if ep == "security.OAuthService/IntrospectToken":
                self._send(200, {"active": True, "username": state.username, "scope": "all"})
            elif ep == "competitions.CompetitionApiService/StartSubmissionUpload":
                token = f"blob-{len(state.requests)}"
                state.upload_names[token] = rec.json().get("fileName", "")
                self._send(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})
            elif rec.path.startswith("/upload/"):
                state.uploads[rec.path.rsplit("/", 1)[1]] = body
                self._send(200, {})
            elif ep == "competitions.CompetitionApiService/CreateSubmission":
                sent = rec.json()
                names = [state.upload_names.get(t, "") for t in sent.get("blobFileTokens", [])]
                _record_submission(state, sent, names[0] if names else "")
                self._send(200, {"message": SUBMISSION_MESSAGE, "ref": 4242})
            elif ep == "competitions.CompetitionApiService/ListSubmissions":
                listed = state.submissions.get(rec.json().get("competitionName", ""), [])
                self._send(200, {"submissions": listed})
            elif ep == "competitions.CompetitionApiService/GetSubmissionLimits":
                self._send(200, {"numToday": 1, "numTotal": 1, "numAllowedNow": 4})
            elif ep.startswith(("kernels.", "datasets.", "blobs.")) or ep.endswith(
                    "CreateCodeSubmission"):
                self._send(*_delivery_answer(state, ep, rec.json()))
            elif ep == "competitions.CompetitionApiService/DownloadDataFiles":
                slug = rec.json().get("competitionName", "data")
                self.send_response(302)
                self.send_header("Location", f"http://localhost/files/{slug}.zip")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif rec.path.startswith("/files/kernel/") and state.runner is not None and (
                    (data := state.runner.file(rec.path)) is not None):
                self._send(200, data)
            elif rec.path.startswith("/files/kernel/"):
                slug, name = rec.path.split("/")[-2:]
                self._send(200, state.kernel_outputs.get(slug, state.kernel_files).get(name, b""))
            elif rec.path.startswith("/files/"):
                self._send(200, state.zip_bytes)
            else:
                self._send(404, {"code": 404, "message": f"stand-in has no {rec.path}"})

        do_POST = _handle  # noqa: N815 - http.server's naming
        do_PUT = _handle  # noqa: N815
        do_GET = _handle  # noqa: N815

    return Handler


def _delivery_answer(state: StandinState, ep: str, body: dict) -> tuple[int, dict]:
    """Answers for kernels, datasets, blob uploads and code submissions."""
    method = ep.split("/", 1)[1]
    if state.runner is not None and ep.startswith("kernels."):
        answered = state.runner.answer(method, body, state.dataset_files)
        if answered is not None:
            return answered
    if method == "StartBlobUpload":
        token = f"blob-{len(state.requests)}"
        state.blob_names[token] = body.get("name", "")
        return 200, {"token": token, "createUrl": f"http://localhost/upload/{token}"}
    if method in ("GetDatasetStatus", "GetDataset"):
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        if ref not in state.datasets:
            return 404, {"code": 404, "message": f"dataset {ref} not found"}
        if method == "GetDataset":
            return 200, {"ref": ref, "currentVersionNumber": state.datasets[ref]}
        statuses = state.dataset_statuses.get(ref) or ["ready"]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return 200, {"status": status}
    if method in ("CreateDataset", "CreateDatasetVersion"):
        ref = f"{body.get('ownerSlug')}/{body.get('slug') or body.get('datasetSlug')}"
        state.datasets[ref] = state.datasets.get(ref, 0) + 1
        files = body.get("files") or (body.get("body") or {}).get("files") or []
        state.dataset_files[ref] = {state.blob_names.get(f.get("token"), ""): state.uploads.get(
            f.get("token"), b"") for f in files}
        return 200, {"ref": ref, "url": f"http://localhost/datasets/{ref}", "status": "ok",
                     "error": ""}
    if method == "SaveKernel":
        return _save_kernel(state, body)
    if method == "GetKernel":
        return _get_kernel(state, body)
    if method == "GetKernelSessionStatus":
        ref = f"{body.get('userName')}/{body.get('kernelSlug')}"
        statuses = state.kernel_statuses.setdefault(ref, ["COMPLETE"])
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        answer = {"status": status}
        if status == "ERROR" and state.failure_message:
            answer["failureMessage"] = state.failure_message
        return 200, answer
    if method == "ListKernelSessionOutput":
        slug = body.get("kernelSlug", "")
        files = [{"fileName": name, "url": f"http://localhost/files/kernel/{slug}/{name}"}
                 for name in state.kernel_outputs.get(slug, state.kernel_files)]
        return 200, {"files": files, "log": state.kernel_log}
    if method == "CreateCodeSubmission":
        _record_submission(state, body, body.get("fileName", ""))
        return 200, {"message": SUBMISSION_MESSAGE, "ref": 4243}
    return 404, {"code": 404, "message": f"stand-in has no {ep}"}


def _dataset_ready(state: StandinState, ref: str) -> bool:
    statuses = state.dataset_statuses.get(ref) or ["ready"]
    return ref in state.datasets and statuses[0] == "ready"


def _save_kernel(state: StandinState, body: dict) -> tuple[int, dict]:
    """A new kernel version; sources Kaggle cannot attach (yet) are answered, not refused."""
    ref = body.get("slug", "")
    datasets = body.get("datasetDataSources") or []
    invalid = {
        "invalidDatasetSources": [d for d in datasets if not _dataset_ready(state, d)],
        "invalidKernelSources": [k for k in body.get("kernelDataSources") or []
                                 if k not in state.kernel_versions],
        "invalidModelSources": [m for m in body.get("modelDataSources") or []
                                if m not in state.models],
    }
    state.kernel_versions[ref] = state.kernel_versions.get(ref, 0) + 1
    version = state.kernel_versions[ref]
    state.kernel_sources.setdefault(ref, {})[version] = {
        d: state.datasets[d] for d in datasets if d not in invalid["invalidDatasetSources"]}
    state.kernel_models.setdefault(ref, {})[version] = [
        m for m in body.get("modelDataSources") or [] if m not in invalid["invalidModelSources"]]
    return 200, {"ref": f"/code/{ref}", "url": f"http://localhost/code/{ref}",
                 "versionNumber": version, "error": "",
                 **{k: v for k, v in invalid.items() if v}}


def _get_kernel(state: StandinState, body: dict) -> tuple[int, dict]:
    """A kernel version's metadata as Kaggle keeps it: the sources it really has attached."""
    slug, _, asked = str(body.get("kernelSlug", "")).partition("/")
    ref = f"{body.get('userName')}/{slug}"
    if ref not in state.kernel_versions:
        return 404, {"code": 404, "message": "NotFound"}
    version = int(asked or state.kernel_versions[ref])
    datasets = state.kernel_sources.get(ref, {}).get(version, {})
    return 200, {
        "metadata": {"ref": ref, "id": 1, "title": slug, "language": "python",
                     "kernelType": "notebook", "isPrivate": True, "enableGpu": False,
                     "enableInternet": False, "datasetDataSources": list(datasets),
                     "modelDataSources": state.kernel_models.get(ref, {}).get(version, []),
                     "currentVersionNumber": version},
        "blob": {"source": "{}", "language": "python", "kernelType": "notebook", "slug": slug}}


def _record_submission(state: StandinState, body: dict, file_name: str) -> None:
    """List a received submission (newest first) with the next planned public score."""
    slug = body.get("competitionName", "")
    listed = state.submissions.setdefault(slug, [])
    scores = state.public_scores.get(slug) or [""]
    score = scores.pop(0) if len(scores) > 1 else scores[0]
    listed.insert(0, {
        "ref": 5000 + sum(len(v) for v in state.submissions.values()),
        "fileName": file_name, "date": "2026-12-05T04:00:00.000Z",
        "description": body.get("submissionDescription", ""),
        "status": "COMPLETE" if score else "PENDING", "publicScore": score,
        "privateScore": "",
    })


class StandinKaggle:
    """Runs the stand-in in a daemon thread; `state` holds requests and planned failures."""

    def __init__(self, host: str = "127.0.0.1", port: int = 80) -> None:
        self.state = StandinState()
        self._server = ThreadingHTTPServer((host, port), _make_handler(self.state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StandinKaggle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
