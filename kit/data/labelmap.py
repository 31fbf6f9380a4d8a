"""Label codes and `competition.label_map`: which rule maps each raw code, and a report of them.

A label cell holds one code ("spam"), or several ("cs.AI math.CO", split on
`competition.label_delimiter`; single-label tasks use the first, the primary). `rule_for` says how
`map_label` maps a code: an exact key, the longest matching prefix, or nothing; a code is
ambiguous when more than one key could claim it (an exact key and a prefix, or two prefixes), so
the precedence decided. `LabelKeys` turns cells into codes and classes, memoised per distinct cell
(a 2.4M-row file has a few thousand), counting the codes as it goes.
"""

from __future__ import annotations

import ast
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from kit.config.label_text import label_str
from kit.config.params import CompetitionParams


def map_label(raw: str, label_map: dict[str, str]) -> str | None:
    """Map a raw label: exact match first, then the longest matching prefix; None if neither."""
    if raw in label_map:
        return label_map[raw]
    best = max((k for k in label_map if raw.startswith(k)), key=len, default=None)
    return label_map[best] if best is not None else None


def split_labels(value: object, delimiter: str | None) -> list[str]:
    """One cell of a multilabel column as a list: a list, a list literal, or delimited text."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            return [str(v) for v in ast.literal_eval(text)]
        except (ValueError, SyntaxError):
            pass
    parts = text.split(delimiter) if delimiter is not None else text.split()
    return [p.strip() for p in parts if p.strip()]


def rule_for(code: str, label_map: dict[str, str]) -> tuple[str | None, str, bool]:
    """(class or None, the rule that decided, ambiguous) for one raw code."""
    prefixes = sorted((k for k in label_map if code.startswith(k) and k != code), key=len,
                      reverse=True)
    claims = {label_map[k] for k in prefixes} | ({label_map[code]} if code in label_map else set())
    ambiguous = len(claims) > 1
    if code in label_map:
        return label_map[code], f"exact key {code!r}", ambiguous
    if prefixes:
        return label_map[prefixes[0]], f"prefix {prefixes[0]!r}", ambiguous
    return None, "unmapped", False


def cell_codes(value: Any, comp: CompetitionParams) -> list[str]:
    """The raw codes a task uses from one label cell (single-label: the primary one)."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    if comp.task == "multilabel":
        return split_labels(value, comp.label_delimiter)
    if comp.label_delimiter is not None:
        return split_labels(value, comp.label_delimiter)[:1]
    return [label_str(value)]


class LabelKeys:
    """cell -> the row's class (its stratum in a sample), counting raw codes per row."""

    def __init__(self, comp: CompetitionParams):
        self.comp = comp
        self.codes: Counter[str] = Counter()
        self._memo: dict[Any, tuple[list[str], str]] = {}
        # single-label with a delimiter: only the primary code matters, so memoise on it
        # (arXiv has ~100k distinct category cells but ~150 distinct primary codes)
        self._primary_only = comp.task != "multilabel" and comp.label_delimiter is not None

    def __call__(self, cell: Any) -> str:
        if self._primary_only and isinstance(cell, str) and not cell.lstrip().startswith("["):
            memo_key = cell.strip().split(self.comp.label_delimiter, 1)[0].strip()
            if not memo_key:  # a leading delimiter: memoise on the whole cell
                memo_key = cell
        else:
            memo_key = cell if isinstance(cell, (str, int, float, type(None))) else repr(cell)
        hit = self._memo.get(memo_key)
        if hit is None:
            codes = cell_codes(cell, self.comp)
            label_map = self.comp.label_map
            classes = ([c for c in (map_label(x, label_map) for x in codes) if c is not None]
                       if label_map else codes)
            hit = (codes, classes[0] if classes else f"(unmapped) {' '.join(codes)}")
            if len(self._memo) < 1_000_000:  # free-text labels would grow it without bound
                self._memo[memo_key] = hit
        counts = self.codes
        for code in hit[0]:
            counts[code] = counts.get(code, 0) + 1
        return hit[1]


def code_counts(cells: pd.Series | list, comp: CompetitionParams) -> Counter[str]:
    """Rows per raw code over in-memory label cells."""
    keys = LabelKeys(comp)
    for cell in cells:
        keys(cell)
    return keys.codes


def mapping_report(codes: dict[str, int], label_map: dict[str, str] | None) -> pd.DataFrame:
    """One row per raw code: rows, class, the rule that mapped it, ambiguous; most rows first."""
    columns = ["code", "rows", "class", "rule", "ambiguous"]
    if not codes:
        return pd.DataFrame(columns=columns)
    rows = []
    for code, n in codes.items():
        if label_map:
            cls, rule, ambiguous = rule_for(code, label_map)
        else:
            cls, rule, ambiguous = code, "the code is the class (no label_map)", False
        rows.append((code, int(n), cls, rule, ambiguous))
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["rows", "code"], ascending=[False, True]).reset_index(drop=True)


def mapping_summary(report: pd.DataFrame) -> dict[str, int]:
    """Distinct codes and rows: mapped, unmapped, ambiguous (for metrics.json)."""
    mapped = report["class"].notna()
    ambiguous = report["ambiguous"].astype(bool)
    return {"mapped_codes": int(mapped.sum()), "mapped_rows": int(report.loc[mapped, "rows"].sum()),
            "unmapped_codes": int((~mapped).sum()),
            "unmapped_rows": int(report.loc[~mapped, "rows"].sum()),
            "ambiguous_codes": int(ambiguous.sum()),
            "ambiguous_rows": int(report.loc[ambiguous, "rows"].sum())}
