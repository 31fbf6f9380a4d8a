"""The schema's building blocks: documented, range-checked sections, and rules shared by them."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, get_args

from kit.errors import KitError

Task = Literal["binary", "multiclass", "multilabel"]
TASKS: tuple[str, ...] = get_args(Task)
# The registry's kinds (kit.models.kinds; tests/test_model_kinds.py holds the two in step): the
# kinds trained per fold, which params `models` lists, and the blends fitted after them, each
# switched on by its params section's `enabled`.
ModelKind = Literal["tfidf", "transformer", "student"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
BLEND_SECTIONS: dict[str, str] = {"ensemble": "ensemble"}  # blend kind -> its params section
# A label as a params file writes it (`1`, `true`, `spam`); CompetitionParams.check() stores it in
# the text form the data loader gives label cells, so `1` matches a 0/1 column.
Label = str | int | float | bool


@dataclass(frozen=True)
class Interval:
    """An allowed range, written as in mathematics: "[0, 1)", "(0, inf)", "[1, inf)"."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> Interval:
        m = re.fullmatch(r"([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])", text.strip())
        if m is None:
            raise ValueError(f"not an interval: {text!r}")  # a schema typo: a kit bug
        return cls(float(m[2]), float(m[3]), m[1] == "[", m[4] == "]")

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        """">= 1", "> 0" or "in [0, 1)": as messages and the README say it."""
        if self.high == math.inf:
            return f"{'>=' if self.low_closed else '>'} {self.low:g}"
        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


class Section:
    """A params section: intervals and rules between keys are checked when it is built."""

    section: ClassVar[str] = ""  # where the section sits in a params file: "transformer.lora"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if "within" not in f.metadata or value is None:
                continue
            within = Interval.parse(f.metadata["within"])
            if value not in within:
                usual = "or null" if f.default is None else f"(default {f.default!r})"
                raise KitError(f"{self.key(f.name)} is {value!r}; use a value {within} {usual}.")
        self.check()

    def check(self) -> None:
        """Rules between keys; sections that have some override this."""

    @classmethod
    def key(cls, name: str) -> str:
        """The dotted key of field `name`, as params files and messages spell it."""
        return f"{cls.section}.{name}" if cls.section else name


def check_template(template: str | None, columns: list[str], key: str) -> None:
    """A text template may only name the text columns (as `{column}`)."""
    if template is None:
        return
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise KitError(
            f"`{key}` is not a valid format string ({err}); write a brace as {{{{ or }}}}."
        ) from None
    for name in names:
        column = re.split(r"[.\[]", name, maxsplit=1)[0]
        if column not in columns:
            raise KitError(
                f"`{key}` uses {{{name}}}, which is not one of `competition.text_columns` "
                f"{columns}. Add the column or fix the template."
            )


def optimizer_names() -> list[str]:
    """Trainer's `optim` names: the values of transformers' OptimizerNames enum.

    Read from transformers/training_args.py's source, not imported: that import pulls in torch,
    peft and bitsandbytes (5-14 s), and every notebook checks its params first, also 01, 03 and
    04, which train nothing. Imported as before when it is loaded already or the source does not
    define the enum any more."""
    import importlib.util
    import sys

    loaded = sys.modules.get("transformers.training_args")
    spec = importlib.util.find_spec("transformers") if loaded is None else None
    if spec is not None and spec.submodule_search_locations:
        names = _enum_values(Path(spec.submodule_search_locations[0]) / "training_args.py",
                             "OptimizerNames")
        if names:
            return names
    from transformers.training_args import OptimizerNames

    return [o.value for o in OptimizerNames]


@functools.lru_cache(maxsize=4)
def _enum_values(source: Path, enum: str) -> list[str]:
    """The string values assigned in class `enum` of a Python file ([] when it has none)."""
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == enum:
            return [a.value.value for a in node.body if isinstance(a, ast.Assign)
                    and isinstance(a.value, ast.Constant) and isinstance(a.value.value, str)]
    return []


def check_optimizer(name: str) -> None:
    """`transformer.optimizer` must be a Trainer `optim` name (transformers' OptimizerNames)."""
    names = optimizer_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KitError(
            f"`transformer.optimizer` is {name!r}, not a Trainer optimizer.{hint} Use one of "
            f"transformers' OptimizerNames, e.g. adamw_torch, adamw_8bit, paged_adamw_32bit."
        )


def check_seeds(seeds: list[int] | None, key: str) -> None:
    """A seeds list names at least one seed, each once, none negative (null: the run's seed)."""
    if seeds is None:
        return
    if not seeds:
        raise KitError(f"`{key}` is an empty list; list the seeds to average, e.g. [42, 43, 44], "
                       "or write null to train once with the run's `seed`.")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise KitError(f"`{key}` {seeds} lists seed {', '.join(map(str, twice))} more than once: "
                       "a repeated seed trains the same model again. List each seed once.")
    negative = [s for s in seeds if s < 0]
    if negative:
        raise KitError(f"`{key}` {seeds} holds the negative seed {negative[0]}; seeds are >= 0.")
