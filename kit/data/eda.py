"""Exploratory analysis: class balance, text lengths (chars and tokens), duplicates and leakage.

Each function returns a table or a figure; `kit.steps.eda` runs them for the 01_eda notebook.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kit.data.arrow_rows import text_batches
from kit.data.competition import Competition
from kit.data.labelmap import mapping_report

PERCENTILES = (50, 90, 95, 99, 100)


def class_balance(comp: Competition) -> pd.DataFrame:
    """Rows per class in train (multilabel: rows carrying each label)."""
    counts = comp.y.sum(axis=0) if comp.task == "multilabel" else np.bincount(
        comp.y, minlength=len(comp.labels))
    table = pd.DataFrame({"label": comp.labels, "rows": counts})
    table["share"] = (table["rows"] / len(comp.y)).round(4)
    return table.sort_values("rows", ascending=False).reset_index(drop=True)


def plot_class_balance(table: pd.DataFrame, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(table) + 1.5))
    ax.barh(table["label"].astype(str), table["rows"], color="#4C72B0")
    ax.invert_yaxis()
    for y, (rows, share) in enumerate(zip(table["rows"], table["share"], strict=True)):
        ax.text(rows, y, f" {rows} ({share:.1%})", va="center", fontsize=8)
    ax.set_xlabel("training rows")
    ax.set_title(title)
    ax.margins(x=0.2)
    return fig


def whitespace_tokens(text: str) -> list[str]:
    """Fallback token count when no model tokenizer is named: words and punctuation."""
    return re.findall(r"\w+|[^\w\s]", text)


def load_tokenizer(name: str | None) -> tuple[Callable[[list[str]], list[int]], str]:
    """A token counter: the named model's tokenizer, or whitespace words when `name` is None."""
    if name is None:
        return (lambda texts: [len(whitespace_tokens(t)) for t in texts]), "words"
    from transformers import AutoTokenizer

    from kit.core.model_source import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(name))

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]

    return count, name


def _count_in_batches(count_tokens: Callable[[list[str]], list[int]],
                      texts: Sequence[str]) -> np.ndarray:
    """Tokens per text, counted a batch (a list) at a time: texts may be an Arrow TextColumn."""
    return np.array([n for part in text_batches(texts, 4096) for n in count_tokens(part)],
                    dtype=np.int64)


def text_lengths(comp: Competition, count_tokens: Callable[[list[str]], list[int]]
                 ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Percentiles of characters and tokens per text, train and test."""
    lengths = {
        "train chars": np.array([len(t) for t in comp.train_texts]),
        "test chars": np.array([len(t) for t in comp.test_texts]),
        "train tokens": _count_in_batches(count_tokens, comp.train_texts),
        "test tokens": _count_in_batches(count_tokens, comp.test_texts),
    }
    table = pd.DataFrame(
        {name: np.percentile(v, PERCENTILES).round().astype(int) for name, v in lengths.items()},
        index=[f"p{p}" if p < 100 else "max" for p in PERCENTILES],
    ).T
    return table, lengths


def plot_lengths(lengths: dict[str, np.ndarray], max_length: int, unit: str) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, kind in zip(axes, ("chars", "tokens"), strict=True):
        both = np.concatenate([lengths[f"train {kind}"], lengths[f"test {kind}"]])
        # A few huge texts would squash the histogram into one bar: clip the axis at p99.5 and
        # count the longer texts in the last bin.
        upper = float(np.percentile(both, 99.5))
        if kind == "tokens":
            upper = max(upper, 1.1 * max_length)
        bins = np.linspace(0, max(upper, 1), 50)
        for split, color in (("train", "#4C72B0"), ("test", "#DD8452")):
            v = lengths[f"{split} {kind}"]
            label = f"{split} (median {np.median(v):.0f}, max {v.max():.0f})"
            ax.hist(np.minimum(v, bins[-1]), bins=bins, alpha=0.6, color=color, label=label)
        if kind == "tokens":
            ax.axvline(max_length, color="k", ls="--", label=f"suggested max_length {max_length}")
        name = kind if kind == "chars" else f"tokens ({unit})"
        clipped = " (longer texts counted in the last bin)" if both.max() > bins[-1] else ""
        ax.set_xlabel(name + clipped)
        ax.set_ylabel("texts")
        ax.legend(fontsize=8)
    fig.suptitle("Text length per example")
    fig.tight_layout()
    return fig


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def duplicates_and_leakage(comp: Competition) -> pd.DataFrame:
    """Counts of short texts, duplicates within train/test, conflicting labels, train∩test."""
    train = pd.Series([_normalize(t) for t in comp.train_texts])
    test = pd.Series([_normalize(t) for t in comp.test_texts])
    labels = pd.Series([str(v) for v in (comp.y.tolist())])
    dup_train = train.duplicated(keep=False)
    conflicting = (
        pd.DataFrame({"t": train[dup_train], "y": labels[dup_train]})
        .groupby("t")["y"].nunique().gt(1).sum()
    )
    overlap = test.isin(set(train))
    rows = [
        ("train texts under 10 characters", int((train.str.len() < 10).sum())),
        ("train rows whose text repeats in train", int(dup_train.sum())),
        ("repeated train texts with conflicting labels", int(conflicting)),
        ("test rows whose text repeats in test", int(test.duplicated(keep=False).sum())),
        ("test rows whose text is also in train (leakage)", int(overlap.sum())),
    ]
    return pd.DataFrame(rows, columns=["check", "rows"])


def examples_per_class(comp: Competition, n: int, seed: int) -> pd.DataFrame:
    """A few training texts of each class (multilabel: rows carrying the label)."""
    rng = np.random.default_rng(seed)
    out = []
    for k, label in enumerate(comp.labels):
        rows = np.flatnonzero(comp.y[:, k] if comp.task == "multilabel" else comp.y == k)
        for i in rng.choice(rows, size=min(n, len(rows)), replace=False):
            text = comp.train_texts[i]
            out.append({"label": label, "text": text[:200] + ("…" if len(text) > 200 else "")})
    return pd.DataFrame(out)


def label_mapping(comp: Competition, label_map: dict[str, str] | None) -> pd.DataFrame:
    """Raw label codes of the whole training file: rows, class, the rule that mapped each
    (exact key, longest prefix, or unmapped) and whether several keys claimed it."""
    return mapping_report(comp.label_codes or {}, label_map)
