"""What `kit serve` runs with: request limits, micro-batching, token (no heavy imports here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Request size limits; over any of them the answer is 413."""

    max_texts: int = 64  # texts per request
    max_chars: int = 20_000  # characters per text (all its columns together)
    max_body_bytes: int = 1_000_000  # request body


@dataclass(frozen=True)
class BatchingConfig:
    """How concurrent requests are gathered into model calls."""

    enabled: bool = True
    max_texts: int = 64  # texts per model call (a larger single request still runs alone)
    max_wait_ms: float = 5.0  # how long a batch waits for more requests after its first
    max_queue: int = 256  # requests waiting; one more is refused (503)


@dataclass
class ServeSettings:
    """One served run folder and how it is served."""

    run_folder: Path
    token: str | None = None  # bearer token required on /predict and /health when set
    limits: Limits = field(default_factory=Limits)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    device: str | None = None  # None: CUDA when present (transformer only)
    backend: str = "auto"  # auto, torch, onnx, onnx-int8 (kit.models.onnx_export.choose_backend)
    threads: int | None = None  # the model's CPU threads (torch and ONNX Runtime); None: torch's
