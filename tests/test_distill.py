"""A distilled `student`: its loss, soft targets that never leak, pseudo-labels only in training,
a student that really follows its teacher, and a student run that predicts like a transformer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from kit.config.params import params_from_dict
from kit.core.run_state import RunState
from kit.core.rundir import open_run
from kit.data.competition import load_competition
from kit.data.folds import load_or_make_folds
from kit.errors import KitError
from kit.models.hf.distill import distillation_loss, soft_kl
from kit.models.hf.resume import TransformerResult
from kit.models.hf.trainer import KitTrainer
from kit.steps.train import train_models
from tests.conftest import write_params

# -- (a) the loss ---------------------------------------------------------------------------------


def _batch(seed: int = 0, n: int = 6, k: int = 4):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=gen) * 2
    teacher = torch.softmax(torch.randn(n, k, generator=gen) * 3, dim=-1)
    labels = torch.randint(0, k, (n,), generator=gen)
    return logits, teacher, labels


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_alpha_0_is_the_cross_entropy_and_alpha_1_is_t2_times_the_kl(temperature):
    logits, teacher, labels = _batch()
    ce = F.cross_entropy(logits, labels)
    assert torch.equal(distillation_loss(ce, logits, teacher, 0.0, temperature, "multiclass"), ce)
    # KL(teacher_T || student_T) written out: teacher_T = p^(1/T) renormalised.
    p_t = teacher ** (1 / temperature)
    p_t = p_t / p_t.sum(dim=1, keepdim=True)
    s_t = torch.softmax(logits / temperature, dim=1)
    kl = (p_t * (p_t.log() - s_t.log())).sum(dim=1).mean()
    mixed = distillation_loss(ce, logits, teacher, 1.0, temperature, "multiclass")
    torch.testing.assert_close(mixed, temperature**2 * kl, rtol=1e-5, atol=1e-6)
    half = distillation_loss(ce, logits, teacher, 0.5, temperature, "multiclass")
    torch.testing.assert_close(half, 0.5 * ce + 0.5 * temperature**2 * kl)


def test_the_kl_gradient_pulls_the_student_toward_the_teacher():
    logits, teacher, labels = _batch(seed=1)
    temperature = 2.0
    logits.requires_grad_(True)
    distillation_loss(F.cross_entropy(logits, labels), logits, teacher, 1.0, temperature,
                      "multiclass").backward()
    # d(T^2 KL)/dz = T (student_T - teacher_T) / n: a descent step raises a logit exactly where
    # the teacher gives more probability than the student.
    p_t = teacher ** (1 / temperature)
    p_t = p_t / p_t.sum(dim=1, keepdim=True)
    s_t = torch.softmax(logits.detach() / temperature, dim=1)
    torch.testing.assert_close(logits.grad, temperature * (s_t - p_t) / len(logits))
    stepped = logits.detach() - 0.5 * logits.grad
    before = soft_kl(logits.detach(), teacher, temperature, "multiclass")
    assert soft_kl(stepped, teacher, temperature, "multiclass") < before


def test_multilabel_kl_is_zero_at_the_teacher_and_positive_elsewhere():
    teacher = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.7, 0.99]])
    at_teacher = (teacher.log() - (1 - teacher).log()).clone()
    assert abs(float(soft_kl(at_teacher, teacher, 3.0, "multilabel"))) < 1e-6
    assert float(soft_kl(torch.zeros(2, 3), teacher, 3.0, "multilabel")) > 0.01


def test_the_trainer_mixes_the_kl_into_a_student_batch_only():
    """KitTrainer.compute_loss: a batch with `teacher_probs` gets the mixed loss; without them
    (validation, a plain transformer) the cross-entropy it always had."""
    logits, teacher, labels = _batch(seed=2)
    model = lambda **inputs: SimpleNamespace(logits=logits)  # noqa: E731 - a stand-in model
    trainer = SimpleNamespace(task="multiclass", class_weights=None, label_smoothing=0.0,
                              distill=(0.7, 2.0))
    plain = KitTrainer.compute_loss(trainer, model, {"input_ids": 0, "labels": labels})
    ce = F.cross_entropy(logits, labels)
    torch.testing.assert_close(plain, ce)
    mixed = KitTrainer.compute_loss(trainer, model, {"input_ids": 0, "labels": labels,
                                                     "teacher_probs": teacher})
    torch.testing.assert_close(mixed, distillation_loss(ce, logits, teacher, 0.7, 2.0,
                                                        "multiclass"))


# -- the params ----------------------------------------------------------------------------------


def test_the_params_refuse_a_student_without_a_usable_teacher():
    def check(**raw):
        return params_from_dict({"models": ["tfidf", "student"], "cv": {"folds": 3},
                                 "distill": {"teacher": "tfidf"}, **raw})

    assert check().distill.teacher == "tfidf"
    with pytest.raises(KitError, match=r"hold-out split \(cv.folds 1\).*k-fold"):
        check(cv={"folds": 1})
    with pytest.raises(KitError, match="list it before student"):
        check(models=["student", "tfidf"])
    with pytest.raises(KitError, match="ensemble is fitted after all its models"):
        check(distill={"teacher": "ensemble"})
    with pytest.raises(KitError, match=r"`distill.teacher` is null"):
        check(distill={})
    with pytest.raises(KitError, match=r"Did you mean `distill.transformer.lr`"):
        check(distill={"teacher": "tfidf", "transformer": {"lrr": 1e-4}})
    with pytest.raises(KitError, match=r"`distill.transformer.epochs` is 'two'"):
        check(distill={"teacher": "tfidf", "transformer": {"epochs": "two"}})
    with pytest.raises(KitError, match="no student"):
        params_from_dict({"models": ["tfidf"], "pseudo": {"enabled": True}})
    with pytest.raises(KitError, match="multilabel"):
        check(pseudo={"enabled": True}, competition={"task": "multilabel", "metric": "f1_micro"})
    with pytest.raises(KitError, match=r"`pseudo.validation: true`.*Set pseudo.enabled: true"):
        check(pseudo={"validation": True})
    assert check(pseudo={"enabled": True, "test": False, "validation": True}).pseudo.validation
    merged = check(distill={"teacher": "tfidf", "transformer": {"lr": 1e-4, "lora": {"r": 4}}})
    from kit.config.distill import student_transformer

    cfg = student_transformer(merged)
    assert (cfg.lr, cfg.lora.r, cfg.epochs) == (1e-4, 4, merged.transformer.epochs)
    # The student fits each fold once per seed of its own settings (the transformer's, or its own).
    from kit.models.seeds import seeds_of

    assert seeds_of(check(transformer={"seeds": [1, 2]}), "student") == [1, 2]
    assert seeds_of(check(distill={"teacher": "tfidf", "transformer": {"seeds": [7]}}),
                    "student") == [7]
    assert seeds_of(merged, "student") == [None]


# -- (b) soft targets are out of fold; (c) pseudo rows join training rows only ------------------


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """train_transformer replaced by a recorder: what each student fit was given (no training)."""
    calls: list[dict] = []

    def record(train_texts, train_labels, val_texts, val_labels, test_texts, **kw):
        calls.append({"train_texts": list(train_texts), "train_labels": np.asarray(train_labels),
                      "val_texts": list(val_texts), "val_labels": np.asarray(val_labels),
                      "distill": kw["distill"], "work_dir": kw["work_dir"]})
        k = len(kw["label_names"])
        return TransformerResult(np.full((len(val_texts), k), 1 / k),
                                 np.full((len(test_texts), k), 1 / k), 1, 1, None, [], None, 8, {})

    monkeypatch.setattr("kit.models.hf.train.train_transformer", record)
    return calls


def _student_run(project: Path, name: str, **params):
    write_params(project / "params" / f"{name}.yaml", {
        "extends": "topics.yaml", "name": name, "models": ["tfidf", "student"],
        "cv": {"folds": 3}, "tracking": {"enabled": False}, "tfidf": {"char_ngrams": False},
        "distill": {"teacher": "tfidf", "alpha": 0.5, "temperature": 2.0}, **params})
    run = open_run(f"params/{name}.yaml")
    return run, load_competition(run.params)


def _in_fold(run, comp, fold) -> np.ndarray:
    """What the teacher's fit of `fold` (which held out exactly its val rows) says of its
    training rows: in-sample probabilities."""
    import joblib

    model = joblib.load(run.models / "tfidf" / fold.tag / "pipeline.joblib")
    return model.predict_proba([comp.train_texts[i] for i in fold.train_rows])


def test_targets_fold_a_student_fold_learns_from_the_teacher_fit_that_held_out_its_val_rows(
        project: Path, fake_training: list[dict]):
    run, comp = _student_run(project, "byfold", pseudo={"enabled": True, "min_confidence": 0.5})
    train_models(run, comp)
    folds = load_or_make_folds(run, comp)
    assert len(fake_training) == len(folds) == 3
    for fold, call in zip(folds, fake_training, strict=True):
        n = len(fold.train_rows)
        with np.load(run.predictions / "folds" / "tfidf" / f"{fold.tag}.npz") as fit:
            np.testing.assert_array_equal(fit["val_rows"], fold.val_rows)  # the same held out
            fold_test = fit["test_probs"]
        np.testing.assert_allclose(call["distill"].probs[:n], _in_fold(run, comp, fold))
        # the fold's pseudo rows: the test rows that fit (not the fold mean) is sure of
        sure = np.flatnonzero(fold_test.max(axis=1) >= 0.5)
        assert call["train_texts"][n:] == [comp.test_texts[i] for i in sure]
        np.testing.assert_array_equal(call["distill"].probs[n:], fold_test[sure])
        assert call["val_texts"] == [comp.train_texts[i] for i in fold.val_rows]
        # predicted once: a resumed fold reads the same targets from the run folder
        assert (run.path / "distill" / f"tfidf-{fold.tag}.npz").is_file()
    details = run.state().models["student"].details
    assert details["distill_targets"] == "fold" and details["teacher"] == "tfidf"


def test_a_students_full_data_refit_learns_from_the_teachers_oof_rows(
        project: Path, fake_training: list[dict], monkeypatch: pytest.MonkeyPatch):
    """`cv.refit` with `targets: fold`: the refit has no fold of the teacher and no validation
    rows, so its targets are the teacher's OOF rows, and its pseudo rows the fold mean's."""
    # the recorded folds leave no result files to take a step count from
    monkeypatch.setattr("kit.models.hf.refit.refit_settings", lambda cfg, folds: (cfg, [1]))
    run, comp = _student_run(project, "refit", cv={"folds": 3, "refit": True},
                             pseudo={"enabled": True, "min_confidence": 0.5})
    train_models(run, comp)
    refit = fake_training[-1]
    assert Path(refit["work_dir"]).name == "student_full"
    teacher = run.load_predictions("tfidf")
    n = len(comp.train_ids)
    np.testing.assert_array_equal(refit["distill"].probs[:n], teacher.val_probs)
    sure = np.flatnonzero(teacher.test_probs.max(axis=1) >= 0.5)
    assert refit["train_texts"][n:] == [comp.test_texts[i] for i in sure]


@pytest.mark.parametrize("targets", ["fold", "oof"])
def test_what_a_student_fold_learns_from_depends_on_its_val_labels_only_with_targets_oof(
        project: Path, fake_training: list[dict], targets: str):
    """The leak `targets: oof` has and `fold` closes: relabel fold r0_f0's validation rows (same
    folds, same texts) and train the teacher and student again. With `fold` the student of
    r0_f0 gets the very same soft targets and pseudo rows; with `oof` they change (the teacher
    fits of the other folds trained on those labels), so its OOF score on r0_f0 is optimistic."""
    pseudo = {"enabled": True, "min_confidence": 0.4, "validation": True}  # r0_f0's own rows too
    first, comp = _student_run(project, f"{targets}-a", distill={
        "teacher": "tfidf", "targets": targets}, pseudo=pseudo)
    train_models(first, comp)
    fold = load_or_make_folds(first, comp)[0]
    before = fake_training[0]
    path = project / "data" / "topics" / "train.csv"
    train = pd.read_csv(path)
    val = train.index[fold.val_rows]
    train.loc[val, "label"] = np.roll(train.loc[val, "label"].to_numpy(), 1)
    assert (train.loc[val, "label"].to_numpy() != comp.train["label"].to_numpy()[val]).any()
    train.to_csv(path, index=False)
    fake_training.clear()
    second, comp = _student_run(project, f"{targets}-b", distill={
        "teacher": "tfidf", "targets": targets}, pseudo=pseudo)
    (second.path / "folds.json").write_text((first.path / "folds.json").read_text())
    train_models(second, comp)
    after = fake_training[0]
    same = (np.array_equal(before["distill"].probs, after["distill"].probs)
            and before["train_texts"] == after["train_texts"])
    assert same == (targets == "fold")


def test_a_teacher_reads_rows_as_its_own_run_renders_them_swap_view_included():
    """The texts a teacher predicts (a fold's training rows, `pseudo.files`) are rendered with
    its run's template, and with a `swap` view each carries its swapped rendering."""
    from kit.models.distill.teacher import Teacher
    from kit.models.kinds.base import LoadedModel

    params = params_from_dict({"competition": {"text_columns": ["question", "answer"],
                                               "text_template": "Q: {question} A: {answer}"}})
    teacher = Teacher("t", Path("."), params, "transformer", np.zeros((0, 2)), np.zeros((0, 2)))
    df = pd.DataFrame({"question": ["2+2?"], "answer": ["4"]})
    plain = LoadedModel(lambda texts: None, ["no", "yes"], "cpu", "binary", None)
    assert teacher.render(df, plain, "x") == ["Q: 2+2? A: 4"]
    swap = LoadedModel(lambda texts: None, ["no", "yes"], "cpu", "binary", "{answer} / {question}",
                       pair_columns=("question", "answer"))
    (text,) = teacher.render(df, swap, "x")
    assert (text, text.swapped) == ("4 / 2+2?", "2+2? / 4")


def test_targets_oof_a_training_rows_soft_target_is_the_teachers_oof_row(
        project: Path, fake_training: list[dict]):
    run, comp = _student_run(project, "noleak", distill={
        "teacher": "tfidf", "alpha": 0.5, "temperature": 2.0, "targets": "oof"})
    train_models(run, comp)
    folds = load_or_make_folds(run, comp)
    teacher = run.load_predictions("tfidf")
    oof_of = dict(zip(map(str, teacher.val_ids.tolist()), teacher.val_probs, strict=True))
    assert len(fake_training) == len(folds) == 3
    for fold, call in zip(folds, fake_training, strict=True):
        rows = fold.train_rows
        ids = comp.train_ids[rows]
        targets = call["distill"].probs
        assert targets.shape == (len(rows), len(comp.labels))  # no pseudo rows here
        np.testing.assert_array_equal(targets, np.stack([oof_of[str(i)] for i in ids]))
        # ...which is not what the fold's own teacher fit (trained on these rows) says of them:
        # that one saw their labels, and is surer of the gold class.
        in_fold = _in_fold(run, comp, fold)
        assert np.abs(in_fold - targets).max() > 1e-3
        gold = (np.arange(len(rows)), comp.y[rows])
        assert in_fold[gold].mean() > targets[gold].mean()
        assert call["val_texts"] == [comp.train_texts[i] for i in fold.val_rows]
        assert call["distill"].alpha == 0.5 and call["distill"].temperature == 2.0
    state = run.state()
    student = state.models["student"].details
    assert student["teacher"] == "tfidf" and student["teacher_f1_micro"] == pytest.approx(
        state.model_score("tfidf", "f1_micro"))


def test_pseudo_rows_join_every_folds_training_rows_above_the_threshold_only(
        project: Path, fake_training: list[dict], capsys):
    """Each fold's teacher fit (`targets: fold`) picks that fold's pseudo rows among the test
    rows and the rows of `pseudo.files`; they join its training rows, never its validation."""
    import joblib

    extra = pd.DataFrame({"text": ["the soup needs more salt and pepper tonight",
                                   "the team won the match late", "a quiet afternoon"]})
    extra.to_csv(project / "data" / "topics" / "unlabelled.csv", index=False)
    threshold = 0.55
    run, comp = _student_run(project, "pseudo", pseudo={
        "enabled": True, "min_confidence": threshold, "files": ["unlabelled.csv"]})
    train_models(run, comp)
    texts = [*comp.test_texts, *extra["text"]]
    student = run.state().models["student"].details
    out, split = capsys.readouterr().out, 0
    for fold, call in zip(load_or_make_folds(run, comp), fake_training, strict=True):
        fit = joblib.load(run.models / "tfidf" / fold.tag / "pipeline.joblib")
        file_probs = np.load(run.path / "pseudo" / f"tfidf-unlabelled-{fold.tag}.npz")["probs"]
        np.testing.assert_allclose(file_probs, fit.predict_proba(list(extra["text"])))
        candidates = np.concatenate([fit.predict_proba(list(comp.test_texts)), file_probs])
        sure = np.flatnonzero(candidates.max(axis=1) >= threshold)
        split += 0 < len(sure) < len(candidates)
        n = len(fold.train_rows)
        assert call["train_texts"][:n] == [comp.train_texts[i] for i in fold.train_rows]
        assert call["train_texts"][n:] == [texts[i] for i in sure]
        np.testing.assert_array_equal(call["train_labels"][n:], candidates[sure].argmax(axis=1))
        np.testing.assert_allclose(call["distill"].probs[n:], candidates[sure])  # soft
        # validation rows: the fold's own labelled rows, nothing added
        assert call["val_texts"] == [comp.train_texts[i] for i in fold.val_rows]
        np.testing.assert_array_equal(call["val_labels"], comp.y[fold.val_rows])
        expected = np.bincount(candidates[sure].argmax(axis=1), minlength=3)
        assert student["pseudo_rows"][fold.tag] == len(sure)
        assert student["pseudo_candidates"][fold.tag] == len(texts)
        assert student["pseudo_per_class"][fold.tag] == dict(
            zip(comp.labels, expected.tolist(), strict=True))
        assert f"student {fold.tag}: {len(sure)} of {len(texts)} unlabelled rows joined" in out
    assert split, "the threshold splits the candidates of some fold"


def test_pseudo_validation_adds_each_folds_val_rows_unlabelled_as_the_held_out_fit_sees_them(
        project: Path, fake_training: list[dict]):
    """`pseudo.validation`: after the test rows, each fold's own validation rows that its teacher
    fit (which held them out) is sure of join its training rows with that fit's probabilities and
    argmax as label, never their gold label; they stay the fold's validation rows, scored with
    their labels. (That no validation label reaches them: the relabelling test above.)"""
    threshold = 0.93
    run, comp = _student_run(project, "ownval", pseudo={
        "enabled": True, "min_confidence": threshold, "validation": True})
    train_models(run, comp)
    student = run.state().models["student"].details
    split = 0
    for fold, call in zip(load_or_make_folds(run, comp), fake_training, strict=True):
        with np.load(run.predictions / "folds" / "tfidf" / f"{fold.tag}.npz") as fit:
            held_out, fold_test = fit["val_probs"], fit["test_probs"]
        n = len(fold.train_rows) + int((fold_test.max(axis=1) >= threshold).sum())
        sure = np.flatnonzero(held_out.max(axis=1) >= threshold)
        split += 0 < len(sure) < len(fold.val_rows)
        assert call["train_texts"][n:] == [comp.train_texts[fold.val_rows[i]] for i in sure]
        np.testing.assert_array_equal(call["distill"].probs[n:], held_out[sure])
        np.testing.assert_array_equal(call["train_labels"][n:], held_out[sure].argmax(axis=1))
        assert call["val_texts"] == [comp.train_texts[i] for i in fold.val_rows]
        np.testing.assert_array_equal(call["val_labels"], comp.y[fold.val_rows])
        assert student["pseudo_val_rows"][fold.tag] == len(sure)
        assert student["pseudo_val_candidates"][fold.tag] == len(fold.val_rows)
    assert split, "the threshold splits the validation rows of some fold"


def test_no_pseudo_row_joins_at_threshold_one_and_hard_labels_are_one_hot(
        project: Path, fake_training: list[dict]):
    run, comp = _student_run(project, "none", pseudo={"enabled": True, "min_confidence": 1.0})
    train_models(run, comp)
    assert all(len(c["train_texts"]) == len(f.train_rows)
               for c, f in zip(fake_training, load_or_make_folds(run, comp), strict=True))
    assert set(run.state().models["student"].details["pseudo_rows"].values()) == {0}
    fake_training.clear()
    run, comp = _student_run(project, "hard", pseudo={"enabled": True, "min_confidence": 0.0,
                                                      "soft": False})
    train_models(run, comp)
    call, fold = fake_training[0], load_or_make_folds(run, comp)[0]
    added = call["distill"].probs[len(fold.train_rows):]
    assert len(added) == len(comp.test) and set(np.unique(added)) == {0.0, 1.0}
    np.testing.assert_array_equal(added.argmax(axis=1), call["train_labels"][len(fold.train_rows):])


def test_a_teacher_run_must_share_the_competition_classes_rows_and_folds(
        project: Path, fake_training: list[dict]):
    for name, folds in (("kfold", 3), ("holdout", 1)):
        teacher, comp = _student_run(project, name, models=["tfidf"], distill={},
                                     cv={"folds": folds})
        train_models(teacher, comp)

    # A k-fold run with the same folds: the fit of each fold of its best model teaches that
    # fold (`targets: fold`), or its OOF rows do (`targets: oof`).
    kfold = open_run("params/kfold.yaml")
    for targets in ("fold", "oof"):
        fake_training.clear()
        run, comp = _student_run(project, f"same-{targets}", models=["student"],
                                 distill={"teacher": "kfold", "targets": targets})
        train_models(run, comp)
        first = load_or_make_folds(run, comp)[0]
        if targets == "fold":
            want = _in_fold(kfold, comp, first)
        else:
            oof = kfold.load_predictions("tfidf")
            where = {str(v): i for i, v in enumerate(oof.val_ids.tolist())}
            want = oof.val_probs[[where[str(v)] for v in comp.train_ids[first.train_rows]]]
        np.testing.assert_allclose(fake_training[0]["distill"].probs, want)
        assert run.state().models["student"].details["teacher"] == "kfold/tfidf"
    from kit.models.kinds import load_fitted

    with pytest.raises(KitError, match=r"model tfidf has no fit of fold r0_f7"):
        load_fitted(kfold.path, kfold.params, "tfidf", None, fold="r0_f7")

    # A hold-out student may learn from a k-fold teacher run's OOF rows (no fit held out its
    # validation rows alone); `targets: fold` says so.
    run, comp = _student_run(project, "one", models=["student"], cv={"folds": 1},
                             distill={"teacher": "outputs/kfold:tfidf", "targets": "oof"})
    train_models(run, comp)
    with pytest.raises(KitError, match=r"validates on one hold-out split.*targets: oof"):
        _student_run(project, "one-fold", models=["student"], cv={"folds": 1},
                     distill={"teacher": "outputs/kfold:tfidf"})

    refusals = {
        "other folds": ({"cv": {"folds": 4}, "distill": {"teacher": "kfold"}},
                        r"made other folds \(3 folds x 1 repeat\(s\), seed 42"),
        "hold-out teacher": ({"cv": {"folds": 1}, "distill": {"teacher": "holdout:tfidf",
                                                              "targets": "oof"}},
                             r"hold-out split \(cv.folds 1 in .*k-fold \(cv.folds >= 2\)"),
        "no such run": ({"distill": {"teacher": "outputs/nowhere"}},
                        r"no run folder \(with params.yaml\) is at"),
        "other classes": ({"competition": {"labels": ["food", "sport", "tech", "art"]},
                           "distill": {"teacher": "kfold"}}, r"`competition.labels` None"),
    }
    for name, (params, message) in refusals.items():
        run, comp = _student_run(project, name.replace(" ", "-"),
                                 **{"models": ["student"], **params})
        with pytest.raises(KitError, match=message):
            train_models(run, comp)


# -- (d) a student follows its teacher; its run predicts like any transformer run -------------


@pytest.fixture(scope="module")
def misled(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):
    """A hold-out student (alpha 1: the KL term only) of a k-fold teacher run whose saved OOF
    probabilities call every sport row food (0.98), and are right on the other classes."""
    from tests.serve_helpers import build_run

    root = tmp_path_factory.mktemp("misled")
    quick = {"tracking": {"enabled": False}, "tfidf": {"char_ngrams": False}}
    build_run(root, name="teacher", models=["tfidf"], cv={"folds": 3}, **quick)
    saved = root / "outputs" / "teacher" / "predictions" / "tfidf.npz"
    with np.load(saved, allow_pickle=True) as z:
        arrays = dict(z)
    labels = ["food", "sport", "tech"]  # sorted: the probability columns
    gold = pd.read_csv(root / "data" / "topics" / "train.csv").set_index("id")["label"]
    wrong = {"food": "food", "sport": "food", "tech": "tech"}
    said = [labels.index(wrong[gold[i]]) for i in arrays["val_ids"].tolist()]
    arrays["val_probs"] = np.full((len(said), 3), 0.01)
    arrays["val_probs"][np.arange(len(said)), said] = 0.98  # rows summing to 1 (to rounding)
    arrays["val_probs"] /= arrays["val_probs"].sum(axis=1, keepdims=True)
    np.savez(saved, **arrays)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared
    try:
        run = build_run(root, name="student", models=["student"], **quick,
                        distill={"teacher": "teacher:tfidf", "alpha": 1.0, "temperature": 1.0,
                                 "targets": "oof"},
                        transformer={"model": str(tiny_model), "max_length": 32, "epochs": 6.0,
                                     "batch_size": 8, "eval_steps": 50, "save_steps": 50,
                                     "lr": 5e-3, "warmup_ratio": 0.0})
    finally:
        torch.set_num_threads(threads)
    return run, gold, labels


@pytest.mark.slow  # the `misled` run trains a tiny BERT (about 6 s)
def test_a_student_learns_its_teachers_labels_not_the_gold_ones(misled):
    run, gold, labels = misled
    preds = np.load(run.path / "predictions" / "student.npz", allow_pickle=True)
    said = [labels[k] for k in preds["val_probs"].argmax(axis=1)]
    truth = [gold[i] for i in preds["val_ids"].tolist()]
    sport = [s for s, t in zip(said, truth, strict=True) if t == "sport"]
    others = [(s, t) for s, t in zip(said, truth, strict=True) if t != "sport"]
    assert sport and sport.count("food") / len(sport) >= 0.75, sport  # as the teacher said
    assert sum(s == t for s, t in others) / len(others) >= 0.75, others
    assert "sport" not in said


@pytest.mark.slow  # the `misled` run trains a tiny BERT (about 6 s)
def test_kit_predict_serves_a_student_run_like_a_transformer_run(misled, tmp_path, capsys):
    from kit.cli import main
    from kit.kaggle.package import copy_inference_run
    from kit.serve.predictor import Predictor

    run, _, labels = misled
    src = tmp_path / "new.csv"
    run.test[["id", "text"]].to_csv(src, index=False)
    assert main(["predict", str(run.path), "--input", str(src), "--device", "cpu"]) == 0
    got = pd.read_csv(tmp_path / "new.predictions.csv")
    assert list(got.columns) == ["id", "label", *(f"prob_{name}" for name in labels)]
    np.testing.assert_allclose(got.iloc[:, 2:].to_numpy(), run.submit_probs, atol=1e-6)
    # Packaged for a Kaggle notebook: the student's export alone predicts (no teacher needed).
    packaged = copy_inference_run(run.path, tmp_path / "dataset" / "student")
    assert (packaged / "models" / "student" / "model" / "kit_export.json").is_file()
    assert not (packaged.parent / "teacher").exists()
    predictor = Predictor.load(packaged, device="cpu")
    assert predictor.model_name == "student"
    np.testing.assert_allclose(predictor.raw_probs(run.test_texts), run.test_probs, atol=1e-6)


# -- (e) a killed student run resumes exactly ----------------------------------------------------


@pytest.mark.slow
def test_a_student_run_killed_in_its_second_fold_resumes_there_and_ends_equal(
        project: Path, tiny_model: Path):
    """cv_worker.py stops the student at step 5 of fold r0_f1 (checkpoint at step 4) and the
    test kills it there: the rerun trains neither the teacher nor the student's first fold
    again, resumes from step 4 with the same soft targets and pseudo rows (its validation rows
    among them), and ends bitwise equal to a run never killed."""
    from helpers.kill import kill_rerun_whole

    write_params(project / "params" / "studentkill.yaml", {
        "extends": "topics.yaml", "name": "studentkill", "models": ["tfidf", "student"],
        "cv": {"folds": 2}, "tracking": {"enabled": False}, "tfidf": {"char_ngrams": False},
        "distill": {"teacher": "tfidf", "alpha": 0.7, "temperature": 2.0},
        "pseudo": {"enabled": True, "min_confidence": 0.5, "validation": True},
        "transformer": {"model": str(tiny_model), "max_length": 32, "epochs": 2.0,
                        "batch_size": 8, "eval_steps": 4, "save_steps": 4, "lr": 2e-2,
                        "save_total_limit": 1}})
    fits = kill_rerun_whole(project, "params/studentkill.yaml", ("r0_f1", 5))
    assert fits == ["killed tfidf r0_f0", "killed tfidf r0_f1",
                    "killed student r0_f0", "killed student r0_f1",  # killed at step 5
                    "killed student r0_f1",  # the rerun: only the killed fold trains again
                    "whole tfidf r0_f0", "whole tfidf r0_f1",
                    "whole student r0_f0", "whole student r0_f1"]
    student = RunState.read(project / "outputs" / "killed").models["student"].details
    assert student["resumed_from_step"] == 4 and min(student["pseudo_rows"].values()) > 0
    assert min(student["pseudo_val_rows"].values()) > 0  # the fold's own rows, unlabelled
    a = np.load(project / "outputs" / "killed" / "predictions" / "student.npz", allow_pickle=True)
    b = np.load(project / "outputs" / "whole" / "predictions" / "student.npz", allow_pickle=True)
    np.testing.assert_array_equal(a["val_probs"], b["val_probs"])
    np.testing.assert_array_equal(a["test_probs"], b["test_probs"])
