"""Seed averaging (`transformer.seeds`) and the full-data refit (`cv.refit`): what they train,
what they save, how a killed run resumes, and how prediction, serving and packaging use them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.config.params import Params, params_from_dict
from kit.core.rundir import open_run
from kit.data.competition import load_competition
from kit.ensemble.fit import read_ensemble
from kit.errors import KitError
from kit.steps.decide import fit_decision_rule
from kit.steps.submit import make_submission
from kit.steps.train import cv_summary, train_models
from tests.conftest import REPO, topic_rows, write_competition, write_params
from tests.helpers.kill import cv_worker, kill_when_stopped

# ----------------------------------------------------------------------------- params rules


@pytest.mark.parametrize(("section", "bad", "message"), [
    ({"transformer": {"seeds": []}}, "transformer.seeds", r"empty list.*\[42, 43, 44\]"),
    ({"transformer": {"seeds": [42, 43, 42]}}, "transformer.seeds", r"seed 42 more than once"),
    ({"transformer": {"seeds": [1, -3]}}, "transformer.seeds", r"negative seed -3"),
    ({"cv": {"refit": True}}, "cv.refit", r"`cv.folds` 1.*needs k-fold.*cv.refit: false"),
    ({"cv": {"folds": 3}, "submit": {"model": "tfidf_full"}}, "submit.model",
     r"not one of `models`"),
])
def test_bad_seeds_and_refit_values_are_refused_by_name(section, bad, message):
    with pytest.raises(KitError, match=message) as err:
        params_from_dict(section, source="p.yaml")
    assert bad in str(err.value)


def test_a_refit_model_can_be_submitted():
    params = params_from_dict({"cv": {"folds": 3, "refit": True}, "models": ["tfidf"],
                               "submit": {"model": "tfidf_full"},
                               "transformer": {"seeds": [7, 8]}})
    assert isinstance(params, Params) and params.transformer.seeds == [7, 8]


# ----------------------------------------------------------------------------- TF-IDF refit


def test_tfidf_refit_fits_every_row_and_is_a_member_for_blend_submit_serve_and_package(
        project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import kit.steps.train as train_step
    from kit.kaggle.package import copy_inference_run
    from kit.serve.models import load_model
    from kit.serve.predictor import Predictor

    run = open_run("params/topics.yaml", "refit", {
        "cv.folds": 3, "cv.refit": True, "ensemble.enabled": True, "submit.model": "tfidf_full",
        "models": ["tfidf"], "tracking.enabled": False})
    comp = load_competition(run.params, project)
    fits: list[tuple[str, int, int]] = []
    real = train_step.fit_model

    def spying(kind, run_, comp_, fold, tracker, callbacks):
        fits.append((fold.tag, len(fold.train_rows), len(fold.val_rows)))
        return real(kind, run_, comp_, fold, tracker, callbacks)

    monkeypatch.setattr(train_step, "fit_model", spying)
    table = train_models(run, comp)
    n = len(comp.train_ids)
    assert fits[-1] == ("full", n, 0) and [f[0] for f in fits] == ["r0_f0", "r0_f1", "r0_f2",
                                                                   "full"]
    kfold, full = run.load_predictions("tfidf"), run.load_predictions("tfidf_full")
    # no row was held out of the refit: its validation stand-in is the k-fold OOF
    np.testing.assert_array_equal(full.val_probs, kfold.val_probs)
    assert not np.allclose(full.test_probs, kfold.test_probs)  # its own test probabilities
    assert table.loc["tfidf_full", "oof_from"] == "tfidf"
    summary = cv_summary(run)
    assert summary.loc["OOF from", "tfidf_full"] == "tfidf's (stand-in)"
    assert summary.loc["OOF", "tfidf_full"] == summary.loc["OOF", "tfidf"]
    # the blend cannot tell them apart on OOF: they share the weight the OOF earned
    weights = read_ensemble(run.path)["weights"]
    assert weights == {"tfidf": 0.5, "tfidf_full": 0.5}
    blend = (kfold.test_probs + full.test_probs) / 2
    np.testing.assert_allclose(run.load_predictions("ensemble").test_probs,
                               blend / blend.sum(axis=1, keepdims=True), atol=1e-12)
    # the submission is the refit's; serving and the package load it as its kind
    decision = fit_decision_rule(run, comp)
    assert decision.model == "tfidf_full"
    submitted = make_submission(run, comp).submission
    assert submitted["label"].tolist() == [comp.labels[k] for k in
                                           decision.rule.apply(full.test_probs)]
    texts = list(comp.test_texts)
    np.testing.assert_allclose(load_model(run.path, run.params, "tfidf_full", None)
                               .predict(texts), full.test_probs, atol=1e-12)
    packed = copy_inference_run(run.path, tmp_path / "dataset" / "run")
    assert (packed / "models" / "tfidf_full" / "pipeline.joblib").is_file()
    served = Predictor.load(packed)
    assert served.model_name == "tfidf_full"
    np.testing.assert_allclose(served.raw_probs(texts), full.test_probs, atol=1e-12)
    # a rerun keeps the finished refit
    fits.clear()
    train_models(run, comp)
    assert fits == []


def test_a_hold_out_model_with_seeds_saves_each_resumes_per_seed_and_serves_the_mean(
        project: Path, monkeypatch: pytest.MonkeyPatch):
    """The seeds loop is the kind's, whatever it is: TF-IDF given seeds [1, 2] here (TF-IDF has
    no `seeds` key, and ignores the seed: the loop's files, resume and serving are tested)."""
    import kit.models.seeds as seeds
    import kit.steps.train as train_step
    from kit.serve.models import load_model

    monkeypatch.setattr(seeds, "seeds_of", lambda params, kind: [1, 2])
    run = open_run("params/topics.yaml", "held", {"tracking.enabled": False})
    comp = load_competition(run.params, project)
    fits: list[int | None] = []
    real = train_step.fit_model

    def spying(kind, run_, comp_, fold, tracker, callbacks):
        fits.append(fold.seed)
        return real(kind, run_, comp_, fold, tracker, callbacks)

    monkeypatch.setattr(train_step, "fit_model", spying)
    train_models(run, comp)
    assert fits == [1, 2]
    assert sorted(p.parent.name for p in (run.models / "tfidf").rglob("*.joblib")) == ["s1", "s2"]
    one, two = (np.load(run.predictions / "folds" / "tfidf" / f"holdout_s{s}.npz")
                for s in (1, 2))
    preds = run.load_predictions("tfidf")
    np.testing.assert_allclose(preds.test_probs, (one["test_probs"] + two["test_probs"]) / 2)
    served = load_model(run.path, run.params, "tfidf", None, labels=comp.labels)
    np.testing.assert_allclose(served.predict(list(comp.test_texts)), preds.test_probs,
                               atol=1e-12)
    table = cv_summary(run)  # hold-out: each seed's validation score and their mean's
    assert list(table.index) == ["s1", "s2", "seed mean"] and list(table.columns) == ["tfidf"]
    # killed after seed 1 finished (seed 2's file and the model's own never written)
    (run.predictions / "folds" / "tfidf" / "holdout_s2.npz").unlink()
    (run.predictions / "tfidf.npz").unlink()
    fits.clear()
    train_models(run, comp)
    assert fits == [2]
    np.testing.assert_allclose(run.load_predictions("tfidf").test_probs, preds.test_probs)


# ----------------------------------------------------------------------------- transformer

SEEDS = [5, 6]
# The tests below share one trained run (module fixture `seeded`): under pytest-xdist they go to
# one worker (`--dist loadgroup`), which trains it once.
SEEDED = pytest.mark.xdist_group("seeded-run")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A project whose run `whole` trained, never killed, a tiny BERT with 2 seeds on 2 folds
    and their full-data refit (2 seeds), blended, through 03 and 04."""
    root = tmp_path_factory.mktemp("seeded")
    (root / "params").mkdir()
    (root / "params" / "base.yaml").write_text((REPO / "params" / "base.yaml").read_text())
    data = topic_rows(24)
    train = data.sample(frac=0.75, random_state=0).sort_values("id")
    test = data.drop(train.index)
    write_competition(root / "data" / "topics", train, test, answer=test[["id", "label"]].assign(
        Usage=["Public" if i % 2 else "Private" for i in range(len(test))]))
    write_params(root / "params" / "seeded.yaml", {
        "extends": "base.yaml", "name": "seeded", "models": ["transformer"],
        "competition": {"slug": "topics", "metric": "f1_micro"},
        "cv": {"folds": 2, "refit": True}, "tracking": {"enabled": False},
        "ensemble": {"enabled": True}, "submit": {"model": "ensemble"},
        "thresholds": {"bootstrap": 50},
        "transformer": {"model": str(tiny_model), "max_length": 32, "epochs": 2.0,
                        "batch_size": 8, "eval_steps": 2, "save_steps": 2, "lr": 5e-3,
                        "save_total_limit": 1, "seeds": SEEDS}})
    log = root / "fits.log"
    assert cv_worker(root, "params/seeded.yaml", "whole", log).wait() == 0
    run = open_run("params/seeded.yaml", "whole", root=root)
    comp = load_competition(run.params, root)
    fit_decision_rule(run, comp)
    make_submission(run, comp)
    return root


def _preds(root: Path, run: str, model: str) -> dict[str, np.ndarray]:
    with np.load(root / "outputs" / run / "predictions" / f"{model}.npz",
                 allow_pickle=True) as z:
        return dict(z)


def _result(folder: Path) -> dict:
    return json.loads((folder / "transformer_result.json").read_text())


@pytest.mark.slow
@SEEDED
def test_seeds_train_different_models_whose_mean_is_saved_predicted_and_served(
        seeded: Path, tmp_path: Path):
    from kit.cli import main
    from kit.kaggle.package import copy_inference_run
    from kit.serve.models import load_model
    from kit.serve.predictor import Predictor

    out = seeded / "outputs" / "whole"
    folds = out / "predictions" / "folds" / "transformer"
    for tag in ("r0_f0", "r0_f1"):
        a, b = (np.load(folds / f"{tag}_s{s}.npz") for s in SEEDS)
        # another seed, another model: head init, dropout and data order follow the seed
        assert np.abs(a["val_probs"] - b["val_probs"]).max() > 1e-3
        assert np.abs(a["test_probs"] - b["test_probs"]).max() > 1e-3
        fold = np.load(folds / f"{tag}.npz")
        np.testing.assert_allclose(fold["val_probs"], (a["val_probs"] + b["val_probs"]) / 2)
        np.testing.assert_allclose(fold["test_probs"], (a["test_probs"] + b["test_probs"]) / 2)
        for s in SEEDS:  # each fit trained with its seed (plus the fold's offset)
            saved = _result(out / "models" / "transformer" / tag / f"s{s}")
            assert saved["fingerprint"]["settings"]["seed"] == s + int(tag[-1])
    tests = [np.load(p)["test_probs"] for p in sorted(folds.glob("r0_f?_s*.npz"))]
    kfold = _preds(seeded, "whole", "transformer")
    np.testing.assert_allclose(kfold["test_probs"], np.mean(tests, axis=0), atol=1e-12)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["folds"]["transformer"]) == {f"r0_f{k}{s}" for k in (0, 1)
                                                    for s in ("", "/s5", "/s6")}
    assert set(metrics["models"]["transformer"]["seed_scores"]) == {"5", "6"}
    run = open_run("params/seeded.yaml", "whole", root=seeded)
    assert {"transformer s5", "transformer s6"} <= set(cv_summary(run).columns)
    # kit predict and serving load every fold's every seed, averaged as for test
    comp = load_competition(run.params, seeded)
    texts = list(comp.test_texts)
    served = load_model(out, run.params, "transformer", None)
    np.testing.assert_allclose(served.predict(texts), kfold["test_probs"], atol=1e-6)
    src = tmp_path / "new.csv"
    comp.test[["id", "text"]].to_csv(src, index=False)
    assert main(["predict", str(out), "--input", str(src), "--output",
                 str(tmp_path / "p.csv")]) == 0
    predictor = Predictor.load(out)
    blend = _preds(seeded, "whole", "ensemble")["test_probs"]
    got = pd.read_csv(tmp_path / "p.csv").filter(like="prob_").to_numpy()
    np.testing.assert_allclose(got, predictor.rule.probabilities(blend), atol=1e-6)
    # the package carries every seed's model of every fold and of the refit
    packed = copy_inference_run(out, tmp_path / "dataset" / "run")
    models = sorted(str(p.parent.relative_to(packed)) for p in packed.rglob("kit_export.json"))
    assert models == [f"models/transformer/r0_f{k}/s{s}/model" for k in (0, 1) for s in SEEDS] + [
        f"models/transformer_full/s{s}/model" for s in SEEDS]
    np.testing.assert_allclose(Predictor.load(packed).raw_probs(texts), blend, atol=1e-6)


@pytest.mark.slow
@SEEDED
def test_the_refit_trains_all_rows_for_the_folds_mean_best_step_and_joins_the_blend(
        seeded: Path):
    from kit.models.hf.resume import hash_data

    out = seeded / "outputs" / "whole"
    best = [_result(out / "models" / "transformer" / f"r0_f{k}" / f"s{s}")["result"]["best_step"]
            for k in (0, 1) for s in SEEDS]
    steps = round(float(np.mean(best)))
    run = open_run("params/seeded.yaml", "whole", root=seeded)
    comp = load_competition(run.params, seeded)
    for s in SEEDS:
        saved = _result(out / "models" / "transformer_full" / f"s{s}")
        assert saved["result"]["global_step"] == steps == saved["fingerprint"]["settings"][
            "max_steps"]
        # every training row, none held out for validation
        assert saved["fingerprint"]["data"] == hash_data(list(comp.train_texts), comp.y, [], None)
        assert saved["fingerprint"]["settings"]["seed"] == s
    entry = run.read_metrics()["models"]["transformer_full"]
    assert entry["refit_steps"] == steps and entry["fold_best_steps"] == best
    assert entry["oof_from"] == "transformer"
    kfold, full = _preds(seeded, "whole", "transformer"), _preds(seeded, "whole",
                                                                 "transformer_full")
    np.testing.assert_array_equal(full["val_probs"], kfold["val_probs"])  # the stand-in
    refits = [np.load(out / "predictions" / "folds" / "transformer" / f"full_s{s}.npz")
              for s in SEEDS]
    np.testing.assert_allclose(full["test_probs"], np.mean([r["test_probs"] for r in refits],
                                                           axis=0))
    # the blend gives the refit half of the weight the transformer's OOF earned, and submits it
    weights = read_ensemble(out)["weights"]
    assert weights == {"transformer": 0.5, "transformer_full": 0.5}
    blend = (kfold["test_probs"] + full["test_probs"]) / 2
    blend /= blend.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_preds(seeded, "whole", "ensemble")["test_probs"], blend,
                               atol=1e-12)
    from kit.evaluation.rule_store import load_rule

    rule = load_rule(run, comp.task, comp.labels)
    submitted = pd.read_csv(out / "submission.csv")
    assert submitted["label"].tolist() == [comp.labels[k] for k in rule.apply(blend)]


@pytest.mark.slow
@SEEDED
def test_a_run_killed_in_a_seed_and_in_the_refit_resumes_each_and_ends_equal(seeded: Path):
    """Killed in fold 0's second seed (its first seed finished), then in the refit's first seed:
    each rerun trains only what was unfinished, from its last checkpoint, and the run ends
    bitwise equal to the one never killed."""
    log = seeded / "killed.log"
    refit_steps = json.loads((seeded / "outputs" / "whole" / "metrics.json").read_text())[
        "models"]["transformer_full"]["refit_steps"]
    assert refit_steps >= 3, "the kill at step 3 must land after the refit's checkpoint at step 2"
    kill_when_stopped(cv_worker(seeded, "params/seeded.yaml", "killed", log, ("r0_f0/s6", 3)))
    kill_when_stopped(cv_worker(seeded, "params/seeded.yaml", "killed", log, ("full/s5", 3)))
    assert cv_worker(seeded, "params/seeded.yaml", "killed", log).wait() == 0
    assert log.read_text().split("\n")[:-1] == [
        f"killed transformer {fit}" for fit in (
            "r0_f0/s5", "r0_f0/s6",  # killed at step 3
            "r0_f0/s6", "r0_f1/s5", "r0_f1/s6", "full/s5",  # s5 of fold 0 is not trained again
            "full/s5", "full/s6")]
    out = seeded / "outputs" / "killed"
    assert _result(out / "models" / "transformer" / "r0_f0" / "s6")["result"][
        "resumed_from_step"] == 2
    assert _result(out / "models" / "transformer_full" / "s5")["result"][
        "resumed_from_step"] == 2
    for model in ("transformer", "transformer_full", "ensemble"):
        a, b = _preds(seeded, "killed", model), _preds(seeded, "whole", model)
        np.testing.assert_array_equal(a["val_probs"], b["val_probs"])
        np.testing.assert_array_equal(a["test_probs"], b["test_probs"])
