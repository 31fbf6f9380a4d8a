"""The params reference in README "Params": a table rendered from the schema's field docs.

    python -m kit params-doc              # print the table
    python -m kit params-doc README.md    # rewrite it in place, between its two markers

tests/test_params.py checks that the README holds exactly this table, so the docs cannot drift
from kit.config.schema (defaults, allowed values and intervals are read from the fields).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml

from kit.config.metric_names import METRIC_NAMES
from kit.config.schema import Params
from kit.config.section import Interval, Label

BEGIN = "<!-- params table: generated from kit/config/schema.py, do not edit by hand -->"
END = "<!-- end of params table -->"

_TYPE_NAMES = {str: "text", int: "integer", float: "number", bool: "true, false"}


def params_table() -> str:
    """Every params key (section, key, default, allowed values, doc), then the metric names."""
    lines = ["| key | default | allowed | what it is |", "|---|---|---|---|"]
    for prefix, cls in _sections(Params, ""):
        title = prefix.rstrip(".") or "top level"
        lines.append(f"| **{title}** | | | {_first_line(cls.__doc__)} |")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            allowed = _allowed(hints[f.name], f.metadata.get("within"))
            lines.append(f"| `{prefix}{f.name}` | `{_yaml(default)}` | {allowed} | "
                         f"{_cell(f.metadata['help'])} |")
    lines += ["", "| metric | tasks | scores | what it measures |", "|---|---|---|---|"]
    for name, metric in METRIC_NAMES.items():
        lines.append(f"| `{name}` | {', '.join(metric.tasks)} | {metric.needs} | "
                     f"{_cell(metric.description)} |")
    return "\n".join(lines) + "\n"


def update_readme(path: Path) -> bool:
    """Replace the table between BEGIN and END in `path`; True when the file changed."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no params table markers:\n{BEGIN}\n{END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{params_table()}{END}{tail}"
    path.write_text(new)
    return new != text


def readme_table(path: Path) -> str:
    """The table the README holds now, between the markers."""
    text = path.read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")


def _sections(cls: type, prefix: str) -> Iterator[tuple[str, type]]:
    yield prefix, cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _sections(hints[f.name], f"{prefix}{f.name}.")


def _allowed(tp: Any, within: str | None) -> str:
    args = typing.get_args(tp)
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = tuple(a for a in args if a is not type(None))
        tp = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007
    text = _describe(tp)
    if within is not None:
        text += f" {Interval.parse(within)}"
    return f"{text} or null" if optional else text


def _describe(tp: Any) -> str:
    if tp is Any:
        return "any"  # the section checks the values itself (distill.transformer)
    if tp == Label:
        return "label"  # text, a number or true/false, as the data has it
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_describe(args[0])}"
    if origin is dict:
        return f"mapping of {_describe(args[0])} to {_describe(args[1])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    return _TYPE_NAMES[tp]


def _yaml(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return text.removesuffix("...").strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _first_line(doc: str | None) -> str:
    return _cell((doc or "").strip().splitlines()[0])

