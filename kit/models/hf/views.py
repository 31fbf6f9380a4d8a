"""Test-time views: each text predicted under several cuts (and its pair swapped), averaged.

`transformer.predict_views` lists the views; `ViewPlan` is what prediction needs of them, made
once from the params and the resolved `max_length` (`plan_views`) and recorded in the export's
kit_export.json (`to_record` / `from_export`), so 02_train, `kit predict`, `kit serve`, 05_infer
and the ONNX backend all average the same views. The views:

- `right`: keep the start of a long text (the tokenizer cuts at the right);
- `left`: keep its end;
- `head_tail`: the first half of the token budget from the start, the rest from the end
  (`transformer.head_tokens` from the start when set; special tokens included);
- `swap`: the row rendered with its two swap columns exchanged (kit.data.pairs), cut as in
  training, and its probabilities put back in the row's class order (`transformer.swap_labels`).

Without views (null) a text is cut once, as in training: the kit's behaviour before views. The
mean is over probabilities (softmax rows stay distributions; multilabel columns stay in [0, 1]).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kit.config.params import TransformerParams
from kit.config.views import swap_label_order
from kit.data.pairs import swapped_texts
from kit.errors import KitError
from kit.models.hf.data import head_tail_tokens, predict_probs, set_truncation_side

__all__ = ["RECORD_KEY", "ViewPlan", "check_view_texts", "plan_views", "predict_with_views",
           "view_scores"]

log = logging.getLogger(__name__)

RECORD_KEY = "predict_views"  # its entry in kit_export.json


@dataclass(frozen=True)
class ViewPlan:
    """The views a model averages and how each cuts a text."""

    views: tuple[str, ...]  # empty: the one cut training used
    side: str  # training's truncation side: right, left or head_tail
    head_tokens: int | None  # training's head under head_tail truncation, else None
    view_head_tokens: int | None = None  # the head_tail view's head
    swap_columns: tuple[str, str] | None = None
    swap_order: tuple[int, ...] | None = None  # class columns of the swapped view, row's order

    def cuts(self) -> list[tuple[str, str, int | None]]:
        """(view, truncation side, head tokens) per view; ("trained", ...) without views."""
        if not self.views:
            return [("trained", self.side, self.head_tokens)]
        own = {"right": ("right", None), "left": ("left", None),
               "head_tail": ("head_tail", self.view_head_tokens),
               "swap": (self.side, self.head_tokens)}
        return [(view, *own[view]) for view in self.views]

    def to_record(self) -> dict[str, Any] | None:
        """What kit_export.json keeps (None without views: an export as before views)."""
        if not self.views:
            return None
        return {"views": list(self.views), "head_tail_head_tokens": self.view_head_tokens,
                "swap_columns": list(self.swap_columns) if self.swap_columns else None,
                "swap_order": list(self.swap_order) if self.swap_order else None}

    @classmethod
    def from_export(cls, info: dict[str, Any]) -> ViewPlan:
        """The plan an export recorded (its training cut, and its views if any)."""
        side = info.get("truncation_side", "right")
        head = info.get("head_tokens")
        record = info.get(RECORD_KEY) or {}
        swap = record.get("swap_columns")
        order = record.get("swap_order")
        return cls(tuple(record.get("views") or ()), side, head,
                   record.get("head_tail_head_tokens"), tuple(swap) if swap else None,
                   tuple(order) if order else None)


def plan_views(cfg: TransformerParams, max_length: int, label_names: list[str]) -> ViewPlan:
    """The plan of a training run's params at its resolved `max_length`."""
    head = head_tail_tokens(cfg.truncation_side, cfg.head_tokens, max_length)
    views = tuple(cfg.predict_views or ())
    if not views:
        return ViewPlan((), cfg.truncation_side, head)
    view_head = cfg.head_tokens if cfg.head_tokens is not None else max(1, max_length // 2)
    if not 0 < view_head < max_length:
        raise KitError(f"The head_tail view keeps {view_head} tokens from the start of a "
                       f"{max_length}-token budget: set transformer.head_tokens below max_length.")
    swap = None
    if "swap" in views:
        if not cfg.swap_columns:
            raise KitError("The swap view needs transformer.swap_columns (two text columns); "
                           "params files fill it from competition.text_columns.")
        swap = (cfg.swap_columns[0], cfg.swap_columns[1])
    order = swap_label_order(cfg.swap_labels, label_names) if swap else None
    return ViewPlan(views, cfg.truncation_side, head, view_head, swap,
                    tuple(order) if order else None)


@contextlib.contextmanager
def _cut_at(tokenizer: Any, side: str) -> Iterator[None]:
    """The tokenizer truncating on `side` for a while (the caller holds the model's lock)."""
    before = tokenizer.truncation_side
    set_truncation_side(tokenizer, side)
    try:
        yield
    finally:
        tokenizer.truncation_side = before


def predict_with_views(
    plan: ViewPlan, model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int,
    max_length: int, task: str, autocast_dtype: Any = None, progress: bool = False,
    desc: str = "predict", cache_dir: Path | None = None,
    per_view: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Probabilities (n, K) of `texts`: the mean over the plan's views (kit.models.hf.data's
    `predict_probs` for each; `model` may be an ONNX session, kit.models.onnx_export).

    `per_view`, when given, receives each view's own probabilities (02 scores them).
    """
    outs = []
    for view, side, head in plan.cuts():
        inputs = swapped_texts(texts) if view == "swap" else texts
        with _cut_at(tokenizer, side):
            probs = predict_probs(model, tokenizer, inputs, batch_size, max_length, task,
                                  progress=progress, autocast_dtype=autocast_dtype,
                                  desc=desc if len(plan.cuts()) == 1 else f"{desc} ({view})",
                                  head_tokens=head, cache_dir=cache_dir)
        if view == "swap" and plan.swap_order:
            probs = probs[:, list(plan.swap_order)]
        if per_view is not None:
            per_view[view] = probs
        outs.append(probs)
    return outs[0] if len(outs) == 1 else np.mean(outs, axis=0)


def check_view_texts(cfg: TransformerParams, *texts: Sequence[str]) -> None:
    """Before training: texts a `swap` view will predict carry their swapped rendering."""
    if cfg.predict_views and "swap" in cfg.predict_views:
        for part in texts:
            swapped_texts(part)


def view_scores(per_view: dict[str, np.ndarray], mean: np.ndarray, y: np.ndarray, metric: str,
                task: str) -> dict[str, float]:
    """Each view's validation score and the mean's, logged on one line (02 shows it)."""
    from kit.evaluation.metrics import score

    scores = {view: float(score(metric, y, probs, task=task)) for view, probs in per_view.items()}
    scores["mean"] = float(score(metric, y, mean, task=task))
    log.info("validation %s by view: %s", metric,
             ", ".join(f"{view} {value:.4f}" for view, value in scores.items()))
    return scores
