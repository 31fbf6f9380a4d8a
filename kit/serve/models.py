"""Load a run's model for prediction: one fit, the mean of its k folds, or a fitted ensemble.

Each loader returns `(predict, labels, device, task, template)`; `predict(texts)` gives the raw
probabilities (n, K) that predictions/<model>.npz holds for test: the fold models' mean for a
k-fold model, as in training, and the ensemble's weighted blend of its members (each member
loaded the same way, from this run or the run it came from).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kit.config.params import Params, params_from_dict
from kit.errors import KitError
from kit.evaluation.rule_store import RULE_FILE
from kit.evaluation.thresholds import DecisionRule

Predict = Callable[[list[str]], np.ndarray]


@dataclass
class LoadedModel:
    """A model ready to predict raw probabilities, with what rendering its texts needs."""

    predict: Predict
    labels: list[str]
    device: str
    task: str
    template: str | None


def load_model(folder: Path, params: Params, name: str, device: str | None,
               labels: list[str] | None = None) -> LoadedModel:
    """`name` (tfidf, transformer or ensemble) of the run in `folder`.

    `labels`: the class names when the run itself has no rule naming them (an ensemble's member).
    """
    if name == "ensemble":
        return _load_ensemble(folder, params, device)
    if name not in ("tfidf", "transformer"):
        raise KitError(f"{folder}: cannot serve model {name!r}; kit.serve knows tfidf, "
                       "transformer and ensemble.")
    base = folder / "models" / name
    fold_dirs = sorted(p for p in base.glob("r*_f*") if p.is_dir())
    parts = [_load_one(folder, params, name, d, device, labels) for d in (fold_dirs or [base])]
    if len(parts) == 1:
        return parts[0]

    def mean(texts: list[str]) -> np.ndarray:  # the k fold models, averaged as for test
        return np.mean([p.predict(texts) for p in parts], axis=0)

    first = parts[0]
    return LoadedModel(mean, first.labels, first.device, first.task, first.template)


def _load_one(folder: Path, params: Params, name: str, model_dir: Path,
              device: str | None, labels: list[str] | None) -> LoadedModel:
    if name == "tfidf":
        labels = labels or rule_labels(folder, params)
        predict, labels, dev = _load_tfidf(params, model_dir, labels)
        return LoadedModel(predict, labels, dev, params.competition.task,
                           params.competition.text_template)
    predict, labels, dev, task = _load_transformer(folder, params, device, model_dir / "model")
    template = params.transformer.prompt_template or params.competition.text_template
    return LoadedModel(predict, labels, dev, task, template)


def _load_ensemble(folder: Path, params: Params, device: str | None) -> LoadedModel:
    from kit.ensemble.fit import ENSEMBLE_FILE

    info = json.loads((folder / ENSEMBLE_FILE).read_text())
    if info.get("rank"):
        raise KitError(f"{folder}: a rank-averaged ensemble ranks texts within the test set, so "
                       "it cannot score texts one request at a time. Serve a member, or refit "
                       "the ensemble with ensemble.rank: false.")
    members = [(name, w) for name, w in info["weights"].items() if w > 0]
    labels = rule_labels(folder, params)
    loaded = [(_member(folder, params, name, device, labels), w) for name, w in members]
    templates = {m.template for m, _ in loaded}
    if len(templates) > 1:
        raise KitError(f"{folder}: the ensemble's members render texts differently "
                       f"({sorted(map(str, templates))}); kit.serve renders one text per row.")
    first = loaded[0][0]
    normalize = first.task != "multilabel"

    def blend(texts: list[str]) -> np.ndarray:
        out = sum(w * m.predict(texts) for m, w in loaded) / sum(w for _, w in loaded)
        return out / out.sum(axis=1, keepdims=True) if normalize else out

    return LoadedModel(blend, first.labels, first.device, first.task, first.template)


def _member(folder: Path, params: Params, name: str, device: str | None,
            labels: list[str]) -> LoadedModel:
    run_name, _, kind = name.rpartition("/")
    if not run_name:
        return load_model(folder, params, kind, device, labels)
    other = folder.parent / run_name
    other_params = params_from_dict(yaml.safe_load((other / "params.yaml").read_text()),
                                    source=str(other / "params.yaml"))
    return load_model(other, other_params, kind, device, labels)


def rule_labels(folder: Path, params: Params) -> list[str]:
    """Class names: the pipeline only knows class ids; the rule (or params) names them."""
    rule_file = folder / RULE_FILE
    labels: Any = (DecisionRule.from_json(rule_file).labels if rule_file.exists()
                   else params.competition.labels)
    if not labels:
        raise KitError(
            f"{folder}: no {RULE_FILE} and no `competition.labels`, so the classes have no "
            "names. Run 03_thresholds for this run."
        )
    return list(labels)


def _load_tfidf(params: Params, model_dir: Path,
                labels: list[str]) -> tuple[Callable, list[str], str]:
    from kit.models.tfidf import PIPELINE_FILE, load_pipeline, predict_tfidf

    pipeline = load_pipeline(model_dir / PIPELINE_FILE)
    task = params.competition.task

    def predict(texts: list[str]) -> np.ndarray:
        return predict_tfidf(pipeline, texts, task, len(labels))

    return predict, list(labels), "cpu"


def _load_transformer(folder: Path, params: Params, device: str | None, export: Path,
                      ) -> tuple[Callable, list[str], str, str]:
    from kit.models.export import EXPORT_INFO, load_exported

    if not (export / EXPORT_INFO).is_file():
        raise KitError(
            f"No transformer export at {export} ({EXPORT_INFO} missing): the run did not finish "
            "training. Finish 02_train, or serve with `submit.model: tfidf`."
        )
    info = json.loads((export / EXPORT_INFO).read_text())
    model, tokenizer, labels = load_exported(export, device=device)
    from kit.models.hf.data import set_truncation_side

    set_truncation_side(tokenizer, info.get("truncation_side", "right"))
    head_tokens = info.get("head_tokens")  # head_tail truncation: cut as in training
    task = info.get("task", params.competition.task)
    max_length = int(info.get("max_length") or params.transformer.max_length or 512)
    dev = next(model.parameters()).device
    amp = _autocast_dtype() if dev.type == "cuda" else None
    batch_size = params.transformer.eval_batch_size

    def predict(texts: list[str]) -> np.ndarray:
        from kit.models.hf.data import predict_probs  # length-sorted batches, input order back

        return predict_probs(model, tokenizer, texts, batch_size, max_length, task,
                             progress=False, autocast_dtype=amp, head_tokens=head_tokens)

    return predict, list(labels), str(dev), task


def _autocast_dtype() -> Any:
    """The precision training predicted with on this GPU (bf16 from sm_80, else fp16)."""
    import torch

    from kit.models.hardware import detect_hardware

    profile = detect_hardware()
    return torch.bfloat16 if profile.bf16 else torch.float16 if profile.fp16 else None
