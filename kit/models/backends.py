"""What can run an exported transformer, and the int8 weight types: names only, torch-free.

The CLI parses `--backend` and `--int8-weights` before anything imports torch, and
kit.models.onnx_export (which imports torch) checks the same names, so they live here once.
"""

from __future__ import annotations

__all__ = ["BACKENDS", "INT8_WEIGHTS"]

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
INT8_WEIGHTS = ("auto", "u8", "s8", "s7")  # s7: signed in 7 bits (ORT's reduce_range)
