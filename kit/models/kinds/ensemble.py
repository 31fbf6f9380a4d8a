"""The ensemble kind: a blend (or stack) of the run's models, fitted on their OOF predictions.

Fitting and blending live in kit.ensemble; this module puts them behind `BlendKind`. Its
members load through the registry's `load_fitted` (handed in as `load_member`, so this module
does not import the registry that lists it), each from this run or, for `<run>/<kind>`, from
the run folder beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from kit.config.params import Params, params_from_dict
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.ensemble.fit import ENSEMBLE_FILE, fit_ensemble, read_ensemble
from kit.ensemble.members import ENSEMBLE
from kit.ensemble.stack import apply_stack, stack_features
from kit.errors import KitError
from kit.evaluation.rule_store import rule_labels
from kit.models.kinds.base import LoadedModel, LoadMember
from kit.tracking import Tracker

__all__ = ["EnsembleKind"]


class EnsembleKind:
    """Hill-climbed weights (or a level-2 stack) over the members' probabilities."""

    name = ENSEMBLE
    params_section = "ensemble"
    artifact = ENSEMBLE_FILE

    def __init__(self, load_member: LoadMember) -> None:
        self.load_member = load_member

    def fit_run(self, run: RunDir, comp: Competition, tracker: Tracker) -> float:
        return fit_ensemble(run, comp).score

    def load(self, folder: Path, params: Params, model_dir: Path, device: str | None,
             labels: list[str] | None, backend: str = "auto") -> LoadedModel:
        info = read_ensemble(folder)
        if info is None:
            raise KitError(f"{folder}: no fitted ensemble ({model_dir / self.artifact}); run "
                           "02_train with ensemble.enabled: true, or serve a member.")
        if info.get("rank"):
            raise KitError(f"{folder}: a rank-averaged ensemble ranks texts within the test set, "
                           "so it cannot score texts one request at a time. Serve a member, or "
                           "refit the ensemble with ensemble.rank: false.")
        labels = list(labels or rule_labels(folder, params))
        loaded = [(self._member(folder, params, name, device, labels, backend), w)
                  for name, w in info["weights"].items() if w > 0]
        templates = {m.template for m, _ in loaded}
        if len(templates) > 1:
            raise KitError(f"{folder}: the ensemble's members render texts differently "
                           f"({sorted(map(str, templates))}); kit.serve renders one text per row.")
        first = loaded[0][0]
        normalize = first.task != "multilabel"
        pairs = {m.pair_columns for m, _ in loaded if m.pair_columns}
        if len(pairs) > 1:
            raise KitError(f"{folder}: the ensemble's members swap different text columns "
                           f"({sorted(pairs)}) in their `swap` views; kit.serve renders one pair.")

        def blend(texts: list[str]) -> np.ndarray:
            if "stack" in info:  # the level-2 model on every member's probabilities
                probs = np.stack([m.predict(texts) for m, _ in loaded])
                return apply_stack(info["stack"]["models"], stack_features(probs, first.task),
                                   first.task)
            out = sum(w * m.predict(texts) for m, w in loaded) / sum(w for _, w in loaded)
            return out / out.sum(axis=1, keepdims=True) if normalize else out

        return LoadedModel(blend, first.labels, first.device, first.task, first.template,
                           "+".join(sorted({m.backend for m, _ in loaded})),
                           next(iter(pairs), None))

    def other_runs(self, folder: Path) -> list[str]:
        info = read_ensemble(folder) or {"weights": {}}
        return sorted({name.rpartition("/")[0] for name, w in info["weights"].items()
                       if "/" in name and w})

    def _member(self, folder: Path, params: Params, name: str, device: str | None,
                labels: list[str], backend: str) -> LoadedModel:
        run_name, _, kind = name.rpartition("/")
        if not run_name:
            return self.load_member(folder, params, kind, device, labels, backend)
        other = folder.parent / run_name
        other_params = params_from_dict(yaml.safe_load((other / "params.yaml").read_text()),
                                        source=str(other / "params.yaml"))
        return self.load_member(other, other_params, kind, device, labels, backend)
