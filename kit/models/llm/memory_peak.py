"""The memory a run really reached: CUDA's max allocated on a GPU, the process's peak RSS on CPU.

The plan (kit.models.llm.memory_plan) is checked against these after loading and training.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

__all__ = ["measured_peak_gb", "measured_peak_label"]

GIB = 1024**3


def measured_peak_gb(device: Any) -> float | None:
    """The real peak after a run: torch.cuda.max_memory_allocated on a GPU, peak RSS on CPU.

    The two are not the same measure (see `measured_peak_label`): on CPU it is the whole
    process's resident memory, including Python, libraries and data. None when unavailable.
    """
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            return None
        return round(torch.cuda.max_memory_allocated(device) / GIB, 3)
    if kind == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss is in kilobytes on Linux, in bytes on macOS.
        peak_bytes = peak if sys.platform == "darwin" else peak * 1024
        return round(peak_bytes / GIB, 3)
    return None


def measured_peak_label(device: Any) -> str:
    """What `measured_peak_gb(device)` measures, for tables and logs."""
    kind = str(device).split(":")[0]
    if kind == "cuda":
        return "GPU peak (torch.cuda.max_memory_allocated; excludes the CUDA context)"
    if kind == "cpu":
        return "CPU process peak RSS (resource.getrusage; not GPU memory)"
    return f"no peak measure for device {device}"
