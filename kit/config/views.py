"""The rules of test-time views and fold merging (transformer.predict_views, swap_*, merge_folds).

Part of the schema (kit/config/model_sections.py declares the keys): `check_view_keys` holds the
rules inside the transformer section, `check_views_against` those that need the competition's
text columns and labels or the folds, run from `Params.check` so `kit check` refuses them.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from kit.config.label_text import label_str
from kit.errors import KitError

__all__ = ["VIEWS", "View", "check_view_keys", "check_views_against", "swap_label_order"]

View = Literal["right", "left", "head_tail", "swap"]
VIEWS: tuple[str, ...] = get_args(View)


def check_view_keys(cfg: Any) -> None:
    """Rules between the transformer's view and merge keys (`cfg`: its TransformerParams)."""
    views = cfg.predict_views
    if views is not None:
        if not views:
            raise KitError("transformer.predict_views is an empty list; list views such as "
                           "[right, head_tail], or null for the one view training used.")
        twice = sorted({v for v in views if views.count(v) > 1})
        if twice:
            raise KitError(f"transformer.predict_views lists {twice} twice; list each view once "
                           "(the views' probabilities are averaged with equal weights).")
    swap = views is not None and "swap" in views
    for key in ("swap_columns", "swap_labels"):
        if getattr(cfg, key) is not None and not swap:
            raise KitError(f"transformer.{key} only applies to the `swap` view, which "
                           f"transformer.predict_views ({views}) does not list. Add swap to "
                           f"predict_views, or set {key}: null.")
    if cfg.swap_columns is not None and (len(cfg.swap_columns) != 2
                                         or cfg.swap_columns[0] == cfg.swap_columns[1]):
        raise KitError(f"transformer.swap_columns is {cfg.swap_columns}; name two different text "
                       "columns, e.g. [response_a, response_b].")
    if cfg.swap_labels is not None:
        cfg.swap_labels = {label_str(k): label_str(v) for k, v in cfg.swap_labels.items()}
        swap_label_order(cfg.swap_labels, None)  # a mapping that is not a set of pairs
    if cfg.merge_folds and not cfg.lora.enabled:
        raise KitError("transformer.merge_folds merges the k folds' LoRA adapters into one "
                       "model; a fully fine-tuned model has none. Set transformer.lora.enabled: "
                       "true, or merge_folds: false.")
    if cfg.merge_folds and cfg.lora.merge_on_export:
        raise KitError("transformer.merge_folds needs each fold's adapter, and "
                       "lora.merge_on_export: true saves merged weights instead. Set "
                       "merge_on_export: false (`kit export RUN --merge-folds --merge-weights` "
                       "then writes the merged folds as weights).")


def check_views_against(cfg: Any, text_columns: list[str],
                        labels: list[str] | None, folds: int) -> None:
    """The rules that need the competition and the folds; fills swap_columns when implied."""
    if cfg.merge_folds and folds < 2:
        raise KitError(f"transformer.merge_folds merges the adapters of k folds, and cv.folds is "
                       f"{folds}. Set cv.folds >= 2, or merge_folds: false.")
    if not cfg.predict_views or "swap" not in cfg.predict_views:
        return
    if cfg.swap_columns is None:
        if len(text_columns) != 2:
            raise KitError(
                f"The `swap` view exchanges two text columns, and competition.text_columns is "
                f"{text_columns}. Name the two with transformer.swap_columns (e.g. "
                "[response_a, response_b]), or drop swap from transformer.predict_views.")
        cfg.swap_columns = list(text_columns)
    missing = [c for c in cfg.swap_columns if c not in text_columns]
    if missing:
        raise KitError(f"transformer.swap_columns names {missing}, not among "
                       f"competition.text_columns {text_columns}. Name two of those columns.")
    if cfg.swap_labels and labels is not None:
        unknown = sorted({x for pair in cfg.swap_labels.items() for x in pair} - set(labels))
        if unknown:
            raise KitError(f"transformer.swap_labels names {unknown}, not among "
                           f"competition.labels {labels}.")


def swap_label_order(swap_labels: dict[str, str] | None,
                     label_names: list[str] | None) -> list[int] | None:
    """The column order that turns swapped-view probabilities back into the row's own order.

    {a: b} trades classes a and b (either direction may be written, or both); None when no
    label changes with the order. `label_names` None only checks that the pairs are disjoint.
    """
    if not swap_labels:
        return None
    partner: dict[str, str] = {}
    for a, b in swap_labels.items():
        for x, y in ((a, b), (b, a)):
            if partner.get(x, y) != y or x == y:
                raise KitError(f"transformer.swap_labels {swap_labels} is not a set of pairs: "
                               f"{x!r} would trade places with more than one class (or itself). "
                               "Write each pair once, e.g. {winner_model_a: winner_model_b}.")
            partner[x] = y
    if label_names is None:
        return None
    unknown = sorted(set(partner) - set(label_names))
    if unknown:
        raise KitError(f"transformer.swap_labels names {unknown}, not among the labels "
                       f"{label_names}. Use the class names of the training data.")
    index = {name: i for i, name in enumerate(label_names)}
    return [index[partner.get(name, name)] for name in label_names]
