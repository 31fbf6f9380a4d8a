"""01_eda's step: class balance, label mapping, text lengths (`max_length`), duplicates, examples.

Numbers land in metrics.json under `eda`; the suggested `max_length` becomes the run's resolved
`transformer.max_length` (kit.core.run_state, params.yaml) when the params leave it null; plots
go to the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from kit.config.distill import STUDENT, student_transformer
from kit.config.params import Params
from kit.core.run_state import EdaSummary
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.data.eda import (
    class_balance,
    duplicates_and_leakage,
    examples_per_class,
    label_mapping,
    load_tokenizer,
    plot_class_balance,
    plot_lengths,
    text_lengths,
)
from kit.data.labelmap import mapping_summary
from kit.data.lengths import percentile_length


@dataclass
class EdaResult:
    """What 01_eda shows."""

    balance: pd.DataFrame
    balance_plot: Figure
    lengths: pd.DataFrame
    lengths_plot: Figure
    suggested_max_length: int
    token_unit: str
    checks: pd.DataFrame
    examples: pd.DataFrame
    label_mapping: pd.DataFrame  # raw code, rows, class, rule, ambiguous (whole training file)
    data: dict  # the streamed pass: records, malformed lines, rows kept, cache hit ({} if none)


def length_param(params: Params) -> tuple[str, str] | None:
    """The params key a null `max_length` is resolved into and the model whose tokenizer
    measures it: the `transformer`'s, else a distilled student's (its own `distill.transformer`
    model, or the `transformer` settings it inherits); None when nothing fine-tunes or the
    length is set."""
    if "transformer" in params.models:
        cfg, key = params.transformer, "transformer.max_length"
    elif STUDENT in params.models:
        cfg = student_transformer(params)
        own = {"model", "max_length"} & set(params.distill.transformer)
        key = "distill.transformer.max_length" if own else "transformer.max_length"
    else:
        return None
    return None if cfg.max_length is not None else (key, cfg.model)


def run_eda(run: RunDir, comp: Competition) -> EdaResult:
    """Every analysis of kit.data.eda; saves plots and the `eda` block of metrics.json."""
    params = run.params
    balance = class_balance(comp)
    balance_fig = plot_class_balance(balance, f"{comp.slug}: class balance")
    run.save_plot(balance_fig, "class_balance")
    tuned = length_param(params)
    tokenizer = params.eda.tokenizer
    if tokenizer is None and tuned is not None:
        tokenizer = tuned[1]
    count, unit = load_tokenizer(tokenizer)
    lengths_table, lengths = text_lengths(comp, count)
    pct = params.eda.max_length_percentile
    max_length = percentile_length(lengths["train tokens"], pct)
    lengths_fig = plot_lengths(lengths, max_length, unit)
    run.save_plot(lengths_fig, "text_lengths")
    checks = duplicates_and_leakage(comp)
    examples = examples_per_class(comp, params.eda.examples_per_class, params.seed)
    mapping = label_mapping(comp, params.competition.label_map)
    data = {k: v for k, v in (comp.data_info or {}).items() if k != "label_codes"}
    run.update_state(eda=EdaSummary(
        train_rows=len(comp.train), test_rows=len(comp.test),
        classes=len(comp.labels), token_unit=unit,
        suggested_max_length=max_length, max_length_percentile=pct,
        checks=dict(zip(checks["check"], checks["rows"].astype(int), strict=True)),
        class_rows=dict(zip(balance["label"].astype(str), balance["rows"].astype(int),
                            strict=True)),
        label_mapping=mapping_summary(mapping),
        data={k: v for k, v in data.items() if k != "class_rows_read"},
    ))
    if tuned is not None and unit == tuned[1]:
        # Measured with this model's tokenizer: training uses it, and params.yaml says so.
        run.resolve_param(tuned[0], int(max_length),
                          f"01_eda: p{pct:g} of the training texts' token lengths")
    plt.close("all")  # the returned figures still display in a notebook
    run.record_resources("eda")
    return EdaResult(balance, balance_fig, lengths_table, lengths_fig, max_length, unit, checks,
                     examples, mapping, data)
