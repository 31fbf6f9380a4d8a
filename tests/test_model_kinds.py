"""Every registered model kind is complete: fit -> export -> load -> predict -> package.

The battery scikit-learn's `check_estimator` runs over every estimator, for the kit's model kinds:
a new kind (kit/models/kinds/) that misses a part fails here, not in a user's run. Each kind runs
through the steps (train, thresholds, submit) on the tiny `topics` competition; the transformer
twice, as an encoder and as a LoRA decoder LLM.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kit.config.params import BLEND_SECTIONS, MODEL_KINDS, Params
from kit.kaggle.package import FINAL_FILES, copy_inference_run, run_params
from kit.models.kinds import ALL_KINDS, BLENDS, KINDS, BlendKind, ModelKind, get_kind, load_fitted
from kit.serve.models import load_model
from tests.serve_helpers import BuiltRun, build_run


def _encoder(factory: pytest.TempPathFactory) -> dict:
    import resume_worker as rw

    tiny = rw.build_tiny_model(factory.mktemp("tiny") / "bert")
    return {"models": ["transformer"], "transformer": {
        "model": str(tiny), "max_length": 32, "max_steps": 4, "eval_steps": 2, "save_steps": 2,
        "batch_size": 8, "eval_batch_size": 16, "lr": 5e-3}}


def _student(factory: pytest.TempPathFactory) -> dict:
    """A hold-out student of a 3-fold TF-IDF teacher run's OOF rows (same `topics` data, its own
    folder)."""
    teacher = build_run(factory.mktemp("teacher"), name="teacher", models=["tfidf"],
                        cv={"folds": 3}, tracking={"enabled": False},
                        tfidf={"char_ngrams": False})
    return {**_encoder(factory), "models": ["student"],
            "distill": {"teacher": f"{teacher.path}:tfidf", "targets": "oof"},  # hold-out
            "tracking": {"enabled": False}}


def _lora_decoder(factory: pytest.TempPathFactory) -> dict:
    from tests.helpers.tiny_recipes import build_tiny_model

    tiny = build_tiny_model("smollm2-135m", factory.mktemp("tiny") / "llama")  # a toy Llama
    return {"models": ["transformer"], "transformer": {
        "model": str(tiny), "max_length": 32, "max_steps": 4, "eval_steps": 2, "save_steps": 2,
        "batch_size": 8, "eval_batch_size": 16, "lr": 5e-3,
        "lora": {"enabled": True, "r": 4, "alpha": 8, "unsloth": "never"}}}


# Each case: the kind it runs and the smallest params that train it in seconds. A registered
# kind without a case fails below.
CASES: dict[str, tuple[str, Callable[[pytest.TempPathFactory], dict]]] = {
    "tfidf": ("tfidf", lambda factory: {"models": ["tfidf"]}),
    "transformer-encoder": ("transformer", _encoder),
    "transformer-lora-decoder": ("transformer", _lora_decoder),
    "student": ("student", _student),  # a transformer distilled from a teacher run's OOF
    # k-fold members (their folds load averaged), blended by the ensemble, which 04 submits
    "ensemble": ("ensemble", lambda factory: {
        "models": ["tfidf"], "cv": {"folds": 2}, "ensemble": {"enabled": True},
        "submit": {"model": "ensemble"}}),
}


def _interface(protocol: type, kind: object, name: str, methods: tuple[str, ...]) -> None:
    for method in methods:  # the Protocol's parameters, in order
        assert callable(getattr(kind, method, None)), f"{name} lacks {method}"
        want = list(inspect.signature(getattr(protocol, method)).parameters)
        have = list(inspect.signature(getattr(type(kind), method)).parameters)
        assert have == want, f"{name}.{method} takes {have}, the interface {want}"


def test_every_kind_is_registered_in_the_schema_and_the_tests():
    assert set(KINDS) == set(MODEL_KINDS), "kit.config.section.ModelKind lists other kinds"
    assert {n: b.params_section for n, b in BLENDS.items()} == BLEND_SECTIONS, \
        "kit.config.section.BLEND_SECTIONS lists other blends"
    assert set(ALL_KINDS) == {kind for kind, _ in CASES.values()}, "add the kind to CASES here"
    sections = {f.name: f.type for f in dataclasses.fields(Params)}
    for name, kind in ALL_KINDS.items():
        assert kind.name == name and get_kind(name) is kind
        assert kind.params_section in sections, f"{name}: no params section {kind.params_section}"
        assert FINAL_FILES[name] == kind.artifact
    for name, kind in KINDS.items():
        _interface(ModelKind, kind, name, ("fit", "load"))
    for name, blend in BLENDS.items():
        _interface(BlendKind, blend, name, ("fit_run", "load", "other_runs"))
        section = getattr(Params(), blend.params_section)
        assert hasattr(section, "enabled"), f"{name}: its section switches it on with `enabled`"


@pytest.fixture(scope="module", params=sorted(CASES))
def finished(request, tmp_path_factory, one_thread) -> tuple[str, BuiltRun]:
    """A run of one case through train, thresholds and submit on the tiny `topics` competition
    (the tiny models train on one thread: the machine is shared)."""
    kind, make_params = CASES[request.param]
    params = make_params(tmp_path_factory)
    return kind, build_run(tmp_path_factory.mktemp(f"kind-{request.param}"), **params)


@pytest.mark.slow
def test_a_kind_fits_exports_loads_predicts_and_packages(finished, tmp_path):
    name, run = finished
    kind = get_kind(name)
    # fit -> export: the artifact is where the kind says (once, or in each fold's folder)
    base = run.path / "models" / name
    artifacts = [base / kind.artifact] if (base / kind.artifact).exists() else sorted(
        base.glob(f"r*_f*/{kind.artifact}"))
    assert artifacts, f"{name} left no {kind.artifact} in {base} after fitting"
    # load -> predict: the loaded model predicts what training predicted for test
    params = run_params(run.path)
    loaded = kind.load(run.path, params, artifacts[0].parent, None, None)
    assert len(loaded.labels) == run.test_probs.shape[1]
    assert loaded.predict(run.test_texts[:3]).shape == (3, run.test_probs.shape[1])
    every = load_fitted(run.path, params, name, None)  # all its folds, as 04_submit used them
    np.testing.assert_allclose(every.predict(run.test_texts), run.test_probs, atol=1e-5)
    # package: the copy carries the artifacts, and serves the same predictions from there
    packaged = copy_inference_run(run.path, tmp_path / "dataset" / "run")
    assert packaged is not None
    for artifact in artifacts:
        assert (packaged / artifact.relative_to(run.path)).exists()
    again = load_model(packaged, params, name, None)
    np.testing.assert_allclose(again.predict(run.test_texts), run.test_probs, atol=1e-5)
    assert not (packaged / "predictions").exists()  # predicting needs the model, not its outputs


def test_a_blend_listed_in_models_or_an_unknown_kind_is_refused_by_name():
    from kit.errors import KitError
    from kit.models.kinds import fold_kind

    with pytest.raises(KitError, match=r"`ensemble.enabled: true`"):
        fold_kind("ensemble")
    with pytest.raises(KitError,
                       match=r"Unknown model kind 'svm'.*tfidf, transformer, student, ensemble"):
        load_fitted(Path("."), Params(), "svm", None)
