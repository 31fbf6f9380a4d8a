"""A label as the kit compares it: text, so 1, 1.0 and "1" from different files are one class."""

from __future__ import annotations

__all__ = ["label_str"]


def label_str(value: object) -> str:
    """Labels compare as text; 1.0 read from a CSV with NaNs elsewhere is still "1"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
