"""The REST API of a served run (FastAPI): POST /predict, GET /health, and the page at GET /.

The model is loaded once, at start. A run folder that cannot be served does not stop the server:
/health and /predict answer 503 with the reason. Status codes: 200; 401 without the bearer token
(when one is set); 413 over a limit (texts per request, characters per text, body bytes); 422
for a malformed request, naming the field; 503 without a model or when the queue is full.

Per request the event loop does as little as it can, because on a small machine it takes CPU
from the model (bench/PROFILE.md): texts are rendered from the request's values without a
DataFrame, and the answer is written with orjson from plain values (the response model documents
it, FastAPI does not validate it a second time).
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException

from kit.errors import KitError
from kit.serve.microbatch import MicroBatcher, OverloadedError
from kit.serve.predictor import Decisions, Predictor
from kit.serve.settings import Limits, ServeSettings

log = logging.getLogger(__name__)

__all__ = ["create_app", "serve"]

PAGE = Path(__file__).with_name("page.html")


# --- request and response bodies -----------------------------------------------------------

Text = str | dict[str, str]  # one string, or {column: value} for runs with several text columns


class PredictRequest(BaseModel):
    """`{"text": ...}` or `{"texts": [...]}`, and optionally `top_k` scores per text."""

    model_config = ConfigDict(extra="forbid")
    text: Text | None = None
    texts: list[Text] | None = Field(default=None, min_length=1)
    top_k: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_of_text_or_texts(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("send `text` (one text) or `texts` (a list), exactly one of them")
        return self


class Score(BaseModel):
    label: str
    score: float  # probability after the rule's temperature, as in the submission


class TextPrediction(BaseModel):
    labels: list[str]  # what the decision rule picks (one label, except multilabel)
    scores: list[Score]  # highest first; `top_k` of them when asked


class PredictResponse(BaseModel):
    run: str
    model: str
    metric: str | None
    validation: float | None
    rule: dict[str, Any]
    predictions: list[TextPrediction]


# --- the app -------------------------------------------------------------------------------


@dataclass
class _Served:
    """What the app holds after start: a predictor and its batcher, or why there is none."""

    settings: ServeSettings
    predictor: Predictor | None = None
    batcher: MicroBatcher | None = None
    reason: str | None = None
    header: dict[str, Any] | None = None  # what every answer says about the run and its rule


def create_app(settings: ServeSettings) -> FastAPI:
    """The app for one run folder; the model loads when the app starts (lifespan)."""
    served = _Served(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if settings.threads:
                import torch  # ONNX Runtime sessions take torch's thread count too

                torch.set_num_threads(settings.threads)
            served.predictor = Predictor.load(settings.run_folder, device=settings.device,
                                              backend=settings.backend)
        except KitError as err:
            served.reason = str(err)
        except Exception as err:  # a broken run folder must not stop the server
            log.exception("loading %s failed", settings.run_folder)
            served.reason = f"{type(err).__name__}: {err}"
        if served.predictor is None:
            log.error(f"No model served: {served.reason}")
        else:
            p = served.predictor
            served.header = {"run": p.run_name, "model": p.model_name, "metric": p.metric,
                             "validation": p.validation, "rule": p.describe_rule()}
            served.batcher = MicroBatcher(served.predictor.raw_probs, settings.batching)
            await served.batcher.start()
        yield
        if served.batcher is not None:
            await served.batcher.stop()

    app = FastAPI(title="compkit serve", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)
    auth = [Depends(_token_check(settings.token))]

    page_html = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    @app.get("/health", dependencies=auth)
    async def health() -> JSONResponse:
        return JSONResponse(_health(served), status_code=200 if served.predictor else 503)

    @app.post("/predict", dependencies=auth, response_model=PredictResponse)
    async def predict(body: PredictRequest) -> Response:
        predictor, batcher = served.predictor, served.batcher
        if predictor is None or batcher is None or served.header is None:
            return JSONResponse({"detail": f"No model loaded: {served.reason}"}, status_code=503)
        items = [body.text] if body.texts is None else body.texts
        field_name = "text" if body.texts is None else "texts"
        too_big = _over_limits(items, field_name, settings.limits)
        if too_big:
            return JSONResponse({"detail": too_big}, status_code=413)
        texts = predictor.render_records(_records(items, field_name, predictor))
        try:
            raw = await batcher.predict(texts)
        except OverloadedError as err:
            return JSONResponse(
                {"detail": f"Server busy ({err}); retry shortly."}, status_code=503,
                headers={"Retry-After": "1"},
            )
        answer = {**served.header, "predictions": _predictions(predictor.labels,
                                                                predictor.decide(raw), body.top_k)}
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    return app


def _predictions(labels: list[str], decided: Decisions, top_k: int | None) -> list[dict]:
    """Per text: its labels and the `top_k` highest scores (all by default), highest first."""
    k = min(top_k or len(labels), len(labels))
    order = np.argsort(-decided.probs, axis=1, kind="stable")[:, :k]  # ties: label order
    return [{"labels": names, "scores": [{"label": labels[j], "score": float(row[j])}
                                         for j in ranked]}
            for names, row, ranked in zip(decided.labels, decided.probs, order, strict=True)]


def _health(served: _Served) -> dict[str, Any]:
    settings, predictor = served.settings, served.predictor
    out: dict[str, Any] = {
        "status": "ok" if predictor else "unavailable",
        "model_loaded": predictor is not None,
        "run": predictor.run_name if predictor else settings.run_folder.name,
        "run_folder": str(settings.run_folder),
        "reason": served.reason,
        "limits": asdict(settings.limits),
        "batching": asdict(settings.batching),
        # The model's CPU threads in effect (torch's count, which ONNX Runtime sessions take).
        "threads": sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None,
    }
    if predictor is not None and served.batcher is not None:
        out.update(model=predictor.model_name, device=predictor.device,
                   backend=predictor.backend, task=predictor.task,
                   labels=predictor.labels, text_columns=predictor.text_columns,
                   metric=predictor.metric, validation=predictor.validation,
                   rule=predictor.describe_rule(), served=asdict(served.batcher.stats))
    return out


def _token_check(token: str | None) -> Any:
    """A dependency refusing requests without `Authorization: Bearer <token>` (when set)."""

    async def check(request: Request) -> None:
        if token is None:
            return
        sent = request.headers.get("authorization", "")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(),
                                                                     token.encode()):
            raise HTTPException(401, "Missing or wrong bearer token: send the header "
                                     "`Authorization: Bearer <token>` (kit serve --token).",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


def _over_limits(items: list[Any], field_name: str, limits: Limits) -> str | None:
    if len(items) > limits.max_texts:
        return (f"`{field_name}` holds {len(items)} texts; this server takes at most "
                f"{limits.max_texts} per request (kit serve --max-texts). Split the request.")
    for i, item in enumerate(items):
        chars = len(item) if isinstance(item, str) else sum(len(v) for v in item.values())
        if chars > limits.max_chars:
            where = field_name if field_name == "text" else f"{field_name}[{i}]"
            return (f"`{where}` has {chars} characters; this server takes at most "
                    f"{limits.max_chars} per text (kit serve --max-chars).")
    return None


def _records(items: list[Any], field_name: str, predictor: Predictor) -> list[dict[str, str]]:
    """The texts as rows of the run's text columns; a mismatch is a 422 naming the item."""
    columns = predictor.text_columns
    rows, errors = [], []
    for i, item in enumerate(items):
        loc = ["body", field_name] if field_name == "text" else ["body", field_name, i]
        if isinstance(item, str):
            if len(columns) != 1:
                errors.append({"loc": loc, "type": "value_error",
                               "msg": f"run {predictor.run_name!r} reads the text columns "
                                      f"{columns}: send an object with them, not a string"})
                continue
            rows.append({columns[0]: item})
            continue
        missing = [c for c in columns if c not in item]
        unknown = [k for k in item if k not in columns]
        if missing or unknown:
            errors.append({"loc": loc, "type": "value_error",
                           "msg": f"text columns of run {predictor.run_name!r} are {columns}"
                                  + (f"; missing {missing}" if missing else "")
                                  + (f"; unknown {unknown}" if unknown else "")})
            continue
        rows.append(item)
    if errors:
        raise HTTPException(422, errors)
    return rows


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before it is parsed."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self._message(int(declared))},
                               status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # a chunked body without Content-Length
                    raise HTTPException(413, self._message(seen))
            return message

        await self.app(scope, limited_receive, send)

    def _message(self, size: int) -> str:
        return (f"The request body has {size} bytes or more; this server takes at most "
                f"{self.max_bytes} (kit serve --max-body-bytes).")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
          access_log: bool = False) -> None:
    """Run the app with uvicorn until interrupted (one process; the model loads once)."""
    import uvicorn

    if host not in LOOPBACK and settings.token is None:
        log.warning(f"Serving on {host} without a token: anyone who reaches this port can use "
                    "the model. Pass --token or set KIT_SERVE_TOKEN.")
    log.info(f"Serving {settings.run_folder} on http://{host}:{port}/ "
             f"(micro-batching {'on' if settings.batching.enabled else 'off'})")
    uvicorn.run(create_app(settings), host=host, port=port, access_log=access_log,
                log_level="info")
