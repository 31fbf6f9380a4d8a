"""k-fold cross-validation: fold assignment, OOF predictions, resuming finished folds, ensembles."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from kit.core.rundir import open_run
from kit.data.competition import load_competition
from kit.data.folds import assign_folds, load_or_make_folds
from kit.ensemble.fit import read_ensemble
from kit.errors import KitError
from kit.steps.decide import fit_decision_rule
from kit.steps.train import train_models


def _open(project: Path, params: str = "params/topics.yaml", name: str = "cv", **overrides):
    run = open_run(params, name, {"cv.folds": 3, **overrides})
    return run, load_competition(run.params, project)


def test_folds_cover_each_row_once_stratified(project: Path):
    run, comp = _open(project)
    fold_of = assign_folds(comp, 3, seed=7)
    assert sorted(np.unique(fold_of)) == [0, 1, 2]
    for k in range(3):  # stratified: every fold holds each class's share (within one row)
        counts = np.bincount(comp.y[fold_of == k], minlength=len(comp.labels))
        expected = np.bincount(comp.y) / 3
        assert np.all(np.abs(counts - expected) <= 1), (k, counts, expected)
    fits = load_or_make_folds(run, comp)
    assert [f.tag for f in fits] == ["r0_f0", "r0_f1", "r0_f2"]
    all_val = np.concatenate([f.val_rows for f in fits])
    assert sorted(all_val.tolist()) == list(range(len(comp.train)))
    for f in fits:
        assert not set(f.train_rows) & set(f.val_rows)
    saved = json.loads((run.path / "folds.json").read_text())
    assert saved["folds"] == 3 and len(saved["fold_of"][0]) == len(comp.train)
    again = load_or_make_folds(run, comp)  # read back, same rows
    assert all(np.array_equal(a.val_rows, b.val_rows) for a, b in zip(fits, again, strict=True))
    assert not any(f.is_holdout for f in fits)


def test_one_fold_is_the_holdout_split(project: Path):
    run, comp = _open(project, name="holdout", **{"cv.folds": 1})
    (fit,) = load_or_make_folds(run, comp)
    assert fit.is_holdout and fit.tag == "holdout"
    assert not set(fit.train_rows) & set(fit.val_rows)


def test_folds_respect_groups(project: Path):
    _run, comp = _open(project)
    comp.train["problem"] = comp.train["id"] // 4  # four rows per group
    fold_of = assign_folds(comp, 3, seed=1, group_column="problem")
    for _, rows in comp.train.groupby("problem").groups.items():
        assert len(set(fold_of[np.asarray(rows)])) == 1  # a group sits in one fold


def test_multilabel_folds_hold_every_label(project: Path):
    _run, comp = _open(project, "params/tags.yaml")
    fold_of = assign_folds(comp, 3, seed=3)
    per_fold = np.array([comp.y[fold_of == k].sum(axis=0) for k in range(3)])
    share = comp.y.sum(axis=0) / 3
    assert np.all(np.abs(per_fold - share) <= 2), per_fold  # iterative stratification
    sizes = np.bincount(fold_of)
    assert sizes.max() - sizes.min() <= 2 and len(comp.y) == sizes.sum()
    assert np.array_equal(fold_of, assign_folds(comp, 3, seed=3))  # seeded


def test_too_few_groups_for_the_folds_is_refused(project: Path):
    _run, comp = _open(project)
    comp.train["problem"] = comp.train["id"] % 2
    with pytest.raises(KitError, match=r"2 distinct values, fewer than `cv.folds` 3"):
        assign_folds(comp, 3, seed=1, group_column="problem")


def test_kfold_oof_covers_every_row_and_test_is_the_fold_mean(project: Path):
    run, comp = _open(project)
    table = train_models(run, comp)
    preds = run.load_predictions("tfidf")
    assert sorted(map(int, preds.val_ids)) == sorted(map(int, comp.train_ids))
    fold_files = sorted((run.predictions / "folds" / "tfidf").glob("*.npz"))
    assert [p.stem for p in fold_files] == ["r0_f0", "r0_f1", "r0_f2"]
    test_mean = np.mean([np.load(p)["test_probs"] for p in fold_files], axis=0)
    np.testing.assert_allclose(preds.test_probs, test_mean)
    for p in fold_files:  # each fold's OOF rows hold exactly that fold's probabilities
        z = np.load(p)
        np.testing.assert_allclose(preds.val_probs[z["val_rows"]], z["val_probs"])
    m = run.read_metrics()
    assert m["models"]["tfidf"]["folds"] == 3 and "cv_std" in m["models"]["tfidf"]
    assert set(m["folds"]["tfidf"]) == {"r0_f0", "r0_f1", "r0_f2"}
    assert table.loc["tfidf", "f1_micro"] > 0.9
    # The decision rule is fitted on the OOF rows: all of the training rows.
    result = fit_decision_rule(run, comp)
    assert run.read_metrics()["decision"]["model"] == "tfidf"
    assert result.report.shape[1] == 2


def test_finished_folds_are_not_trained_again(project: Path, monkeypatch: pytest.MonkeyPatch):
    run, comp = _open(project)
    train_models(run, comp)
    first = run.load_predictions("tfidf")
    # A session killed after fold r0_f1 finished: the model's assembled file is not written.
    (run.predictions / "tfidf.npz").unlink()
    (run.predictions / "folds" / "tfidf" / "r0_f2.npz").unlink()
    fitted: list[str] = []
    import kit.steps.train as train_step

    real = train_step.fit_model

    def counting(kind, run_, comp_, fold, tracker, callbacks):
        fitted.append(fold.tag)
        return real(kind, run_, comp_, fold, tracker, callbacks)

    monkeypatch.setattr(train_step, "fit_model", counting)
    state = run.state()  # the session died before the model's report was recorded
    dataclasses.replace(state, models={k: v for k, v in state.models.items() if k != "tfidf"}
                        ).write(run.path)
    train_models(run, comp)
    assert fitted == ["r0_f2"]
    again = run.load_predictions("tfidf")
    np.testing.assert_allclose(again.val_probs, first.val_probs)
    np.testing.assert_allclose(again.test_probs, first.test_probs)


def test_repeats_average_the_oof_of_each_repeat(project: Path):
    run, comp = _open(project, **{"cv.repeats": 2})
    train_models(run, comp)
    fits = load_or_make_folds(run, comp)
    assert len(fits) == 6
    assert not np.array_equal(fits[0].val_rows, fits[3].val_rows)  # another seed, other folds
    preds = run.load_predictions("tfidf")
    files = sorted((run.predictions / "folds" / "tfidf").glob("*.npz"))
    total = np.zeros_like(preds.val_probs)
    for p in files:
        z = np.load(p)
        total[z["val_rows"]] += z["val_probs"]
    np.testing.assert_allclose(preds.val_probs, total / 2)


def test_changed_training_rows_are_refused(project: Path):
    run, comp = _open(project)
    load_or_make_folds(run, comp)
    comp.train.loc[comp.train.index[-1], comp.id_column] = 99999
    with pytest.raises(KitError, match="training file changed"):
        load_or_make_folds(run, comp)


def test_ensemble_of_tfidf_variants_is_a_model(project: Path):
    run, comp = _open(project, **{"ensemble.enabled": True})
    train_models(run, comp)
    # a second run with other TF-IDF settings, the same folds, joins as a member
    other, _ = _open(project, name="cv-words", **{"tfidf.char_ngrams": False})
    train_models(other, comp)
    both, _ = _open(project, name="blend", **{"models": [], "ensemble.enabled": True,
                                              "ensemble.runs": ["cv", "cv-words"]})
    table = train_models(both, comp)
    info = read_ensemble(both.path)
    assert set(info["weights"]) == {"cv/tfidf", "cv/ensemble", "cv-words/tfidf"} - {"cv/ensemble"}
    assert abs(sum(info["weights"].values()) - 1) < 1e-6
    assert info["score"] >= max(info["member_scores"].values()) - 1e-12
    assert "ensemble" in table.index and both.state().best.model == "ensemble"
    assert "weights" not in table.columns
    preds = both.load_predictions("ensemble")
    assert preds.val_probs.shape == (len(comp.train), len(comp.labels))
    np.testing.assert_allclose(preds.val_probs.sum(axis=1), 1.0)


def test_ensemble_members_must_share_rows(project: Path):
    run, comp = _open(project)
    train_models(run, comp)
    hold, _ = _open(project, name="holdout", **{"cv.folds": 1})
    train_models(hold, comp)
    both, _ = _open(project, name="mixed", **{"models": [], "ensemble.enabled": True,
                                              "ensemble.runs": ["cv", "holdout"]})
    with pytest.raises(KitError, match="must share folds"):
        train_models(both, comp)


def test_cv_params_rules():
    from kit.config.schema import CvParams, EnsembleParams, Params, SearchParams, SubmitParams

    with pytest.raises(KitError, match="repeats need k-fold"):
        CvParams(folds=1, repeats=2)
    with pytest.raises(KitError, match=r"cv.folds is 0; use a value >= 1"):
        CvParams(folds=0)
    with pytest.raises(KitError, match=r"needs `search.method: tpe`"):
        SearchParams(ranges={"transformer.lr": [1e-5, 1e-4]})
    with pytest.raises(KitError, match=r"\[low, high\]"):
        SearchParams(method="tpe", ranges={"transformer.lr": [1e-4, 1e-5]})
    with pytest.raises(KitError, match="not one of `models`"):
        Params(models=["tfidf"], submit=SubmitParams(model="ensemble"))
    Params(models=["tfidf"], submit=SubmitParams(model="ensemble"),
           ensemble=EnsembleParams(enabled=True))
    with pytest.raises(KitError, match=r"`ensemble.enabled` is false"):
        Params(models=[], ensemble=EnsembleParams(runs=["a"]))


@pytest.mark.slow
def test_kfold_run_killed_in_fold_3_resumes_there_and_ends_equal(project: Path, tiny_model: Path):
    """The kill lands at step 9 of the third fold (checkpoint at step 8): the rerun skips folds
    1-2, resumes fold 3 from step 8, and ends bitwise equal to a run never killed."""
    from conftest import write_params
    from helpers.kill import kill_rerun_whole

    write_params(project / "params" / "cvkill.yaml", {
        "extends": "topics.yaml", "name": "cvkill", "models": ["transformer"],
        "cv": {"folds": 3}, "tracking": {"enabled": False},
        "transformer": {"model": str(tiny_model), "max_length": 32, "epochs": 2.0,
                        "batch_size": 8, "eval_steps": 4, "save_steps": 4, "lr": 2e-2,
                        "save_total_limit": 1}})
    fits = kill_rerun_whole(project, "params/cvkill.yaml", ("r0_f2", 9))
    assert fits == ["killed transformer r0_f0", "killed transformer r0_f1",
                    "killed transformer r0_f2",  # killed at step 9
                    "killed transformer r0_f2",  # the rerun: folds 1-2 are not trained again
                    "whole transformer r0_f0", "whole transformer r0_f1",
                    "whole transformer r0_f2"]
    killed = json.loads((project / "outputs" / "killed" / "metrics.json").read_text())
    assert killed["models"]["transformer"]["resumed_from_step"] == 8
    a = np.load(project / "outputs" / "killed" / "predictions" / "transformer.npz",
                allow_pickle=True)
    b = np.load(project / "outputs" / "whole" / "predictions" / "transformer.npz",
                allow_pickle=True)
    np.testing.assert_array_equal(a["val_probs"], b["val_probs"])
    np.testing.assert_array_equal(a["test_probs"], b["test_probs"])


def test_kfold_and_ensemble_runs_serve_their_test_predictions(project: Path):
    from kit.serve.models import load_model
    from kit.serve.predictor import Predictor

    other, comp = _open(project, name="words", **{"tfidf.char_ngrams": False})
    train_models(other, comp)
    run, comp = _open(project, name="served", **{"ensemble.enabled": True,
                                                 "ensemble.runs": ["words"],
                                                 "ensemble.method": "nelder_mead",
                                                 "submit.model": "ensemble"})
    train_models(run, comp)
    fit_decision_rule(run, comp)
    texts = list(comp.test_texts)
    kfold = load_model(run.path, run.params, "tfidf", None)  # the mean of the 3 fold models
    np.testing.assert_allclose(kfold.predict(texts), run.load_predictions("tfidf").test_probs,
                               atol=1e-9)
    predictor = Predictor.load(run.path)
    assert predictor.model_name == "ensemble"
    np.testing.assert_allclose(predictor.raw_probs(texts),
                               run.load_predictions("ensemble").test_probs, atol=1e-9)


@pytest.mark.parametrize("method", ["hill_climb", "nelder_mead", "powell"])
def test_fitted_weights_never_lose_to_the_best_member_on_the_fitting_rows(method):
    from kit.ensemble.blend import combine, fit_weights
    from kit.evaluation.metrics import score

    rng = np.random.default_rng(0)
    for trial in range(5):
        y = rng.integers(0, 4, 300)
        members = []
        for noise in rng.uniform(0.5, 3.0, 4):  # four members of different quality
            logits = np.eye(4)[y] * 2 + rng.normal(0, noise, (300, 4))
            members.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
        stack = np.stack(members)

        def f1(probs, y=y):
            return score("f1_macro", y, probs, None, "multiclass")

        def nll(probs, y=y):
            return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1))))

        blend = fit_weights(stack, f1, nll, method, iterations=50, normalize_rows=True)
        best = max(f1(m) for m in members)
        assert blend.score >= best - 1e-12, (trial, method)
        assert np.all(blend.weights >= 0) and abs(blend.weights.sum() - 1) < 1e-9
        assert blend.score == pytest.approx(f1(combine(stack, blend.weights, True)))


def test_a_packaged_kfold_ensemble_predicts_offline_as_in_training(project: Path, tmp_path):
    """What `kit package` copies of a k-fold ensemble run (every fold's model, the members of
    other runs beside it) is all 05_infer needs: the copy alone gives the run's test
    probabilities."""
    from kit.kaggle.package import copy_inference_run
    from kit.serve.predictor import Predictor

    for name, chars in (("words", False), ("chars", True)):
        other, comp = _open(project, name=name, **{"tfidf.char_ngrams": chars})
        train_models(other, comp)
    run, comp = _open(project, name="packed", **{"models": [], "ensemble.enabled": True,
                                                 "ensemble.runs": ["words", "chars"],
                                                 "submit.model": "ensemble"})
    train_models(run, comp)
    fit_decision_rule(run, comp)
    dataset = tmp_path / "dataset"
    copy_inference_run(run.path, dataset / "run")
    weights = read_ensemble(run.path)["weights"]
    used = sorted(name.split("/")[0] for name, w in weights.items() if w > 0)
    copied = sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*.joblib"))
    assert used and copied == [f"{r}/models/tfidf/r0_f{k}/pipeline.joblib" for r in used
                               for k in range(3)]
    predictor = Predictor.load(dataset / "run")
    np.testing.assert_allclose(predictor.raw_probs(list(comp.test_texts)),
                               run.load_predictions("ensemble").test_probs, atol=1e-9)
