"""Every registered model kind is complete: fit -> export -> load -> predict -> package.

The battery scikit-learn's `check_estimator` runs over every estimator, for the kit's model kinds:
a new kind (kit/models/kinds/) that misses a part fails here, not in a user's run.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from kit.config.params import MODEL_KINDS, Params
from kit.kaggle.package import FINAL_FILES, copy_inference_run, run_params
from kit.models.kinds import KINDS, ModelKind, get_kind
from kit.serve.models import load_model
from tests.serve_helpers import BuiltRun, build_run


def _transformer_params(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import resume_worker as rw

    tiny = rw.build_tiny_model(tmp_path_factory.mktemp("tiny") / "bert")
    return {"models": ["transformer"], "transformer": {
        "model": str(tiny), "max_length": 32, "max_steps": 4, "eval_steps": 2, "save_steps": 2,
        "batch_size": 8, "eval_batch_size": 16, "lr": 5e-3}}


def _student_params(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A hold-out student of a 3-fold TF-IDF teacher run (same `topics` data, its own folder)."""
    teacher = build_run(tmp_path_factory.mktemp("teacher"), name="teacher", models=["tfidf"],
                        cv={"folds": 3}, tracking={"enabled": False},
                        tfidf={"char_ngrams": False})
    params = _transformer_params(tmp_path_factory)
    return {**params, "models": ["student"], "distill": {"teacher": f"{teacher.path}:tfidf"},
            "tracking": {"enabled": False}}


# The smallest params that train each kind in seconds; a kind without an entry fails below.
TINY_PARAMS = {
    "tfidf": lambda factory: {"models": ["tfidf"]},
    "transformer": _transformer_params,
    "student": _student_params,
}


def test_every_kind_is_registered_in_the_schema_and_the_tests():
    assert set(KINDS) == set(MODEL_KINDS), "kit.config.section.ModelKind lists other kinds"
    assert set(KINDS) == set(TINY_PARAMS), "add the kind's tiny params to TINY_PARAMS here"
    sections = {f.name for f in dataclasses.fields(Params)}
    for name, kind in KINDS.items():
        assert kind.name == name and get_kind(name) is kind
        assert kind.params_section in sections, f"{name}: no params section {kind.params_section}"
        assert FINAL_FILES[name] == kind.artifact
        missing = [m for m in ("fit", "load") if not callable(getattr(kind, m, None))]
        assert not missing, f"{name} lacks {missing}"
        for method in ("fit", "load"):  # the Protocol's parameters, in order
            want = list(inspect.signature(getattr(ModelKind, method)).parameters)
            have = list(inspect.signature(getattr(type(kind), method)).parameters)
            assert have == want, f"{name}.{method} takes {have}, the interface {want}"


@pytest.fixture(scope="module", params=sorted(TINY_PARAMS))
def finished(request, tmp_path_factory) -> tuple[str, BuiltRun]:
    """A run of one kind through train, thresholds and submit on the tiny `topics` competition."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; the tiny BERT trains on one thread
    try:
        name = request.param
        params = TINY_PARAMS[name](tmp_path_factory)
        return name, build_run(tmp_path_factory.mktemp(f"kind-{name}"), **params)
    finally:
        torch.set_num_threads(threads)


def test_a_kind_fits_exports_loads_predicts_and_packages(finished, tmp_path):
    name, run = finished
    kind = get_kind(name)
    # fit -> export: the artifact is where the kind says
    artifact = run.path / "models" / name / kind.artifact
    assert artifact.exists(), f"{name} left no {kind.artifact} after fitting"
    # load -> predict: the loaded model predicts what training predicted for test
    params = run_params(run.path)
    loaded = kind.load(run.path, params, artifact.parent, None, None)
    np.testing.assert_allclose(loaded.predict(run.test_texts), run.test_probs, atol=1e-5)
    assert len(loaded.labels) == run.test_probs.shape[1]
    # package: the copy carries the artifact, and serves the same predictions from there
    packaged = copy_inference_run(run.path, tmp_path / "dataset" / "run")
    assert packaged is not None and (packaged / "models" / name / kind.artifact).exists()
    again = load_model(packaged, params, name, None)
    np.testing.assert_allclose(again.predict(run.test_texts), run.test_probs, atol=1e-5)
    assert not (packaged / "predictions").exists()  # predicting needs the model, not its outputs
