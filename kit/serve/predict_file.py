"""`kit predict`: a CSV or JSON-lines file through a run's model, streamed chunk by chunk.

The output (CSV) has the id column, the label(s) the run's decision rule gives, and one
`prob_<label>` column per class (the probabilities after the rule's temperature, as in the
submission). It is written to a temporary file and renamed when complete.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kit.core.atomic import atomic_text_file
from kit.data.readers import iter_json_lines
from kit.errors import KitError
from kit.serve.predictor import Predictor

log = logging.getLogger(__name__)

JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")


@dataclass
class FilePrediction:
    """What `predict_file` wrote."""

    output: Path
    rows: int
    seconds: float


def default_output(input_path: Path) -> Path:
    """`test.csv` -> `test.predictions.csv`, next to the input."""
    name = input_path.name
    for suffix in (*JSON_SUFFIXES, ".csv.gz", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return input_path.with_name(f"{name}.predictions.csv")


def read_chunks(path: Path, chunk_rows: int, delimiter: str | None = None,
                encoding: str | None = None) -> Iterator[pd.DataFrame]:
    """The rows of a CSV or JSON-lines file (gzipped or not), `chunk_rows` at a time."""
    if not path.is_file():
        raise KitError(f"Input file not found: {path}.")
    if path.name.lower().endswith(JSON_SUFFIXES):
        records: list[dict] = []
        for record in iter_json_lines(path, progress=False):
            records.append(record)
            if len(records) >= chunk_rows:
                yield pd.DataFrame(records)
                records = []
        if records:
            yield pd.DataFrame(records)
        return
    try:
        yield from pd.read_csv(path, chunksize=chunk_rows, sep=delimiter or ",",
                               encoding=encoding, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise KitError(
            f"Could not read {path} as CSV: {err}. Set competition.csv_delimiter / "
            "competition.encoding in the run's params if the file is not UTF-8 with commas."
        ) from err
    except pd.errors.EmptyDataError as err:
        raise KitError(f"{path} is empty: nothing to predict.") from err


def predict_file(predictor: Predictor, input_path: str | Path, output: str | Path | None = None,
                 chunk_rows: int = 10_000) -> FilePrediction:
    """Predict every row of `input_path`; write id, label(s) and probabilities to `output`."""
    input_path = Path(input_path)
    output = Path(output) if output else default_output(input_path)
    if chunk_rows < 1:
        raise KitError(f"chunk_rows is {chunk_rows}; use a positive number of rows, e.g. 10000.")
    comp = predictor.params.competition
    id_col, label_col = comp.id_column, comp.label_column
    sep = comp.label_delimiter if comp.label_delimiter is not None else " "
    header = [id_col, label_col, *(f"prob_{name}" for name in predictor.labels)]
    start, rows = time.time(), 0
    with atomic_text_file(output) as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for chunk in read_chunks(input_path, chunk_rows, comp.csv_delimiter, comp.encoding):
            texts = predictor.render(chunk, str(input_path))
            if id_col in chunk.columns:
                ids = chunk[id_col].tolist()
            else:
                if rows == 0:
                    log.warning(f"{input_path} has no {id_col!r} column: rows are numbered "
                                "from 0.")
                ids = list(range(rows, rows + len(chunk)))
            decided = predictor.predict(texts)
            labels = [sep.join(names) for names in decided.labels]
            # Floats are written in full (repr): read back, they equal the served scores.
            writer.writerows([i, lab, *p] for i, lab, p in
                             zip(ids, labels, decided.probs.tolist(), strict=True))
            rows += len(chunk)
            elapsed = time.time() - start
            log.info(f"predict: {rows:,} rows ({rows / max(elapsed, 1e-9):,.0f} rows/s)")
    seconds = time.time() - start
    log.info(f"Wrote {rows:,} predictions of run {predictor.run_name!r} "
             f"({predictor.model_name}) to {output} in {seconds:.1f} s.")
    return FilePrediction(output, rows, seconds)
