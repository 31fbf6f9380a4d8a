"""Score every model of finished runs on OOF and on the demo's held-out answer key, side by side.

For each run folder given (default `outputs/demo-win`) and each model it saved predictions of
(`predictions/<model>.npz`: the k-fold members, refits, the student, the ensemble), prints:
the OOF metric under argmax (what the kit chooses on), the local public and private scores of
its test predictions under argmax, and, for the model the run submitted, the scores of the
submission itself (its fitted decision rule) from outputs/submissions.csv. The answer key is
read for reporting only: nothing here feeds back into a run (never tune on it).

    .venv/bin/python bench/score_members.py [outputs/demo-cv outputs/demo-win ...]
    .venv/bin/python bench/score_members.py outputs/demo-win --versus ensemble transformer

`--versus A B` (a single-label task) adds a paired bootstrap of A's score minus B's on each
held-out split (2,000 resamples of its rows): the difference and its 95 % interval, so a gain of
a few rows is not read as a win. A and B are models of the first run given, or `<run>:<model>`
of another run of the same competition (`outputs/demo-win-3seed:student`: two recipes' models).

A refit (`<kind>_full`) has no OOF rows of its own: its OOF column is blank. A model trained with
`seeds` adds one row per seed (`transformer s43`): that seed's own folds, OOF and test fold mean,
so what averaging the seeds gained shows on every split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kit.config.loading import load_params  # noqa: E402
from kit.config.params import Params  # noqa: E402
from kit.core.rundir import RunDir  # noqa: E402
from kit.data.competition import Competition, load_competition  # noqa: E402
from kit.data.folds import load_or_make_folds  # noqa: E402
from kit.evaluation import metrics  # noqa: E402
from kit.models.kinds import KINDS  # noqa: E402
from kit.models.seeds import seed_predictions  # noqa: E402
from kit.steps.decide import validation_of  # noqa: E402
from kit.submission.build import build_submission, score_local  # noqa: E402
from kit.submission.store import read_log  # noqa: E402


def finished_run(folder: Path) -> RunDir:
    """The run in `folder` (relative to the project root), read with the params it saved."""
    folder = folder if folder.is_absolute() else ROOT / folder
    return RunDir(folder, load_params(folder / "params.yaml"), ROOT)


def member_scores(folder: Path) -> pd.DataFrame:
    """One row per saved model of the run in `folder` (and per seed of a seeded one): OOF, local
    public and private (argmax)."""
    run = finished_run(folder)
    params = run.params
    comp = load_competition(params, ROOT)
    metric, task = params.competition.metric, comp.task
    rows = []
    for npz in sorted(run.predictions.glob("*.npz")):
        preds = run.load_predictions(npz.stem)
        oof = None
        if len(preds.val_ids):  # its OOF rows' labels, as 03 reads them (ids checked there)
            val = validation_of(run, comp, npz.stem)
            oof = metrics.score(metric, val.y, val.probs, None, task)
        rows.append({"run": folder.name, "model": npz.stem, "oof_rows": len(preds.val_ids),
                     "oof": oof, **held_out(comp, params, preds.test_probs)})
        rows += seed_rows(run, comp, npz.stem)
    return pd.DataFrame(rows)


def held_out(comp: Competition, params: Params, test_probs: np.ndarray) -> dict:
    """Local public and private scores of `test_probs` under argmax (answer key: report only)."""
    metric = params.competition.metric
    pred = metrics.default_predictions(test_probs, comp.task)
    sub = build_submission(comp, pred, test_probs, "label", params.competition.label_delimiter)
    held = score_local(sub, comp, metric, params.competition.label_delimiter)
    return {"public": held.get("local_public"), "private": held.get("local_private")}


def seed_rows(run: RunDir, comp: Competition, model: str) -> list[dict]:
    """One row per seed of a k-fold model trained with `seeds` (none for other models)."""
    if model not in KINDS:  # a blend or a refit (`<kind>_full`): no fold fits of its own
        return []
    by_seed = seed_predictions(run, comp, model, load_or_make_folds(run, comp))
    metric = run.params.competition.metric
    return [{"run": run.path.name, "model": f"{model} s{seed}", "oof_rows": len(preds.val_ids),
             "oof": metrics.score(metric, comp.y[comp.train_rows(preds.val_ids)],
                                  preds.val_probs, None, comp.task),
             **held_out(comp, run.params, preds.test_probs)}
            for seed, preds in by_seed.items()]


def submitted(folders: list[Path]) -> pd.DataFrame:
    """The last logged submission of each run: its model and its scores under the fitted rule."""
    out = []
    for folder in folders:
        log = folder.parent / "submissions.csv"
        if not log.exists():
            continue
        subs = read_log(log)
        mine = subs[subs["run"] == folder.name]
        if len(mine):
            last = mine.iloc[-1]
            out.append({"run": folder.name, "model": last["model"],
                        "public": last["local_public"], "private": last["local_private"]})
    return pd.DataFrame(out)


def versus(folder: Path, a: str, b: str, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap of model `a`'s argmax score minus `b`'s on each held-out split; `a`, `b`:
    models of the run in `folder`, or `<run folder>:<model>`."""
    params = finished_run(folder).params
    comp = load_competition(params, ROOT)
    if comp.answer_key is None or comp.task == "multilabel":
        raise SystemExit(f"--versus needs a single-label task with an answer key ({folder}).")
    idc, col = comp.id_column, comp.label_column
    key = comp.answer_key[[idc, col, "Usage"]].astype({col: str})
    index = {label: k for k, label in enumerate(comp.labels)}
    preds = {}
    for name in (a, b):
        where, _, model = name.rpartition(":")
        test = finished_run(Path(where) if where else folder).load_predictions(model)
        frame = pd.DataFrame({idc: test.test_ids, "pred": test.test_probs.argmax(axis=1)})
        preds[name] = key.merge(frame.astype({idc: key[idc].dtype}), on=idc)["pred"].to_numpy()
    y = key[col].map(lambda v: index.get(v, -1)).to_numpy()
    metric = params.competition.metric
    rng = np.random.default_rng(seed)
    width = len(comp.labels)

    def score(rows: np.ndarray, pred: np.ndarray) -> float:
        return metrics.score(metric, y[rows], np.eye(width)[pred[rows]], pred[rows], comp.task)

    out = []
    for usage in ("Public", "Private"):
        rows = np.flatnonzero(key["Usage"].to_numpy() == usage)
        diff = score(rows, preds[a]) - score(rows, preds[b])
        boot = [score(r, preds[a]) - score(r, preds[b])
                for r in (rng.choice(rows, len(rows)) for _ in range(resamples))]
        low, high = np.percentile(boot, [2.5, 97.5])
        out.append({"split": usage.lower(), "rows": len(rows), f"{a} - {b}": diff,
                    "95% low": low, "95% high": high,
                    "differing rows": int((preds[a][rows] != preds[b][rows]).sum())})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=["outputs/demo-win"], type=Path)
    parser.add_argument("--versus", nargs=2, metavar=("A", "B"),
                        help="paired bootstrap of model A minus model B on each held-out split")
    args = parser.parse_args()
    folders = [p if p.is_absolute() else ROOT / p for p in args.runs]
    table = pd.concat([member_scores(f) for f in folders], ignore_index=True)
    pd.set_option("display.width", 120)
    print("Each model under argmax (OOF: the rows its folds never trained on):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    subs = submitted(folders)
    if len(subs):
        print("\nSubmitted (the run's chosen model under its fitted decision rule):")
        print(subs.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.versus:
        a, b = args.versus
        print(f"\n{a} minus {b} under argmax, paired bootstrap ({folders[0].name}):")
        print(versus(folders[0], a, b).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
