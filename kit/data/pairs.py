"""Text pairs for the `swap` view: each row rendered twice, the second time with two columns traded.

A model whose test-time views include `swap` (transformer.predict_views) predicts every row once
as rendered and once with its two swap columns exchanged (LMSYS: response A and response B;
a question and its answer). The texts travel through the kit as one list of str (the serving
queue, 05_infer's device shares, an ensemble's members), so each rendered text carries its
swapped rendering with it: a `PairText` is a str (what every other model reads) whose
`.swapped` is the other order. Models without the swap view never look at it.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import pandas as pd

from kit.config.params import CompetitionParams
from kit.data.texts import render_texts, template_of
from kit.errors import KitError

__all__ = ["PairText", "pair_texts", "render_as_read", "render_pairs", "swapped_template",
           "swapped_texts"]


class PairText(str):
    """A rendered text that also holds its rendering with the two swap columns exchanged."""

    swapped: str

    def __new__(cls, text: str, swapped: str) -> PairText:
        obj = super().__new__(cls, text)
        obj.swapped = str(swapped)
        return obj

    def __getnewargs__(self) -> tuple[str, str]:  # pickled to DDP ranks and back
        return str(self), self.swapped


def swapped_template(template: str, columns: Sequence[str]) -> str:
    """`template` with the fields of the two `columns` exchanged (format specs kept).

    "Q: {a}\\nA: {b}" with columns (a, b) becomes "Q: {b}\\nA: {a}"; literal braces stay escaped.
    """
    a, b = columns
    out = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        root, rest = _split_field(name)
        root = b if root == a else a if root == b else root
        out.append("{" + root + rest + (f"!{conversion}" if conversion else "")
                   + (f":{spec}" if spec else "") + "}")
    return "".join(out)


def _split_field(name: str) -> tuple[str, str]:
    """("col", ".attr[0]") from "col.attr[0]": the column and what the template does with it."""
    for i, char in enumerate(name):
        if char in ".[":
            return name[:i], name[i:]
    return name, ""


def pair_texts(texts: Sequence[str], swapped: Sequence[str]) -> list[PairText]:
    """Each text joined with its swapped rendering (the same rows, in the same order)."""
    if len(texts) != len(swapped):
        raise KitError(f"{len(texts)} texts but {len(swapped)} swapped renderings; they must be "
                       "the same rows.")
    return [PairText(t, s) for t, s in zip(texts, swapped, strict=True)]


def render_pairs(df: pd.DataFrame, comp: CompetitionParams, file: str, template: str | None,
                 columns: Sequence[str]) -> list[PairText]:
    """The rows rendered through `template` (as render_texts), each carrying its swapped text."""
    missing = [c for c in columns if c not in comp.text_columns]
    if missing:
        raise KitError(f"The swap view exchanges {list(columns)}, but {missing} is not one of "
                       f"competition.text_columns {comp.text_columns}. Fix "
                       "transformer.swap_columns (or the model's export).")
    plain = render_texts(df, comp, file, template)
    other = render_texts(df, comp, file, swapped_template(template_of(comp, template), columns))
    return pair_texts(plain, other)


def render_as_read(df: pd.DataFrame, comp: CompetitionParams, file: str, template: str | None,
                   pair_columns: Sequence[str] | None) -> list[str]:
    """The rows as a model reads them: with its swap view's `pair_columns`, each text carrying
    its swapped rendering (render_pairs); without, plain texts (render_texts)."""
    if pair_columns:
        return render_pairs(df, comp, file, template, pair_columns)
    return render_texts(df, comp, file, template)


def swapped_texts(texts: Sequence[str]) -> list[str]:
    """The swapped renderings of `texts`, or a KitError when they were rendered without them."""
    plain = [i for i, t in enumerate(texts) if not isinstance(t, PairText)]
    if plain:
        raise KitError(
            f"This model averages a `swap` view, which needs each row's text columns, but text "
            f"{plain[0]} came as one rendered string. Predict through rows: `kit predict`, "
            "`kit serve`, kit.serve.Predictor.render, or kit.data.pairs.render_pairs.")
    return [t.swapped for t in texts]  # type: ignore[attr-defined]
