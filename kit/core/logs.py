"""Library messages go to the `kit` logger; notebooks and the CLI show them as plain lines."""

from __future__ import annotations

import logging
import sys


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at the time (a notebook's, or pytest's capture)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler.__init__ assigns it
        pass


def show_logs(level: int = logging.INFO) -> None:
    """Print the kit's messages (INFO and up) as plain lines on stdout; idempotent."""
    logger = logging.getLogger("kit")
    logger.setLevel(level)
    # bitsandbytes warns at import on CPUs with AVX512-BF16 that an optional kernel package is
    # missing ("Failed to load CPU gemm_4bit_forward"); transformers imports it for any params
    # check. Harmless (../shared PITFALLS) and alarming on every command: silenced.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
