"""Test-time views (transformer.predict_views): the cuts, the swap, the mean, and that every
predictor (02, kit.serve, `kit predict`, ONNX) averages the views the export recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import resume_worker as rw
import torch

from kit.config.params import CompetitionParams, Params, TransformerParams, params_from_dict
from kit.data.pairs import PairText, pair_texts, render_pairs, swapped_template
from kit.errors import KitError
from kit.models.export import EXPORT_INFO, export_for_kaggle
from kit.models.hf.data import tokenize_texts
from kit.models.hf.views import RECORD_KEY, ViewPlan, plan_views
from kit.models.kinds import get_kind

NAMES = ["fruit", "vehicle", "colour"]
MAX_LENGTH = 16
WORDS = [w for group in rw.WORDS.values() for w in group]


def long_text(start: int, n: int = 30) -> str:
    """n words (n + 2 tokens with [CLS] and [SEP]): cut by max_length 16, differently per view."""
    return " ".join(WORDS[(start + 7 * i) % len(WORDS)] for i in range(n))


SHORT = ["red car", "a pear and a plum", "the blue bus"]
LONG = [long_text(k) for k in range(4)]


# ----------------------------------------------------------------------------- the schema


@pytest.mark.parametrize(("over", "match"), [
    ({"transformer": {"predict_views": ["right", "middle"]}},
     r"predict_views\[1\]` is 'middle'; it must be one of 'right', 'left', 'head_tail', 'swap'"),
    ({"transformer": {"predict_views": ["swap"]}}, r"text_columns is \['text'\]. Name the two"),
    ({"competition": {"text_columns": ["q", "a"]},
      "transformer": {"predict_views": ["swap"], "swap_columns": ["q", "x"]}},
     r"swap_columns names \['x'\]"),
    ({"competition": {"text_columns": ["q", "a"], "labels": ["a_wins", "b_wins", "tie"]},
      "transformer": {"predict_views": ["swap"], "swap_labels": {"a_wins": "c_wins"}}},
     r"swap_labels names \['c_wins'\]"),
    ({"transformer": {"predict_views": ["left", "left"]}}, "lists \\['left'\\] twice"),
    ({"transformer": {"predict_views": []}}, "empty list"),
    ({"transformer": {"swap_labels": {"a": "b"}}}, "only applies to the `swap` view"),
    ({"transformer": {"merge_folds": True}}, "lora.enabled: true"),
    ({"transformer": {"merge_folds": True, "lora": {"enabled": True}}}, "cv.folds >= 2"),
    ({"cv": {"folds": 3}, "transformer": {"merge_folds": True,
                                          "lora": {"enabled": True, "merge_on_export": True}}},
     "merge_on_export: false"),
])
def test_the_schema_refuses_views_and_merges_it_cannot_do(over, match):
    with pytest.raises(KitError, match=match):
        params_from_dict({"models": ["transformer"], **over})


def test_swap_columns_default_to_the_two_text_columns_and_labels_pair_up():
    params = params_from_dict({
        "models": ["transformer"], "competition": {"text_columns": ["q", "a"]},
        "transformer": {"predict_views": ["right", "swap"],
                        "swap_labels": {"a_wins": "b_wins"}}})
    assert params.transformer.swap_columns == ["q", "a"]
    plan = plan_views(params.transformer, 32, ["a_wins", "b_wins", "tie"])
    assert plan.swap_order == (1, 0, 2)  # the swapped view's "a wins" is the row's "b wins"
    assert plan.view_head_tokens == 16  # head_tail: half the budget from the start
    with pytest.raises(KitError, match="not a set of pairs"):
        params_from_dict({"models": ["transformer"], "competition": {"text_columns": ["q", "a"]},
                          "transformer": {"predict_views": ["swap"],
                                          "swap_labels": {"x": "y", "y": "z"}}})


def test_the_swapped_template_trades_the_two_fields_only():
    assert swapped_template("Q: {q!r:>5} | {{A}}: {a} ({q})", ["q", "a"]) == \
        "Q: {a!r:>5} | {{A}}: {q} ({a})"
    comp = CompetitionParams(text_columns=["q", "a", "p"], text_template="{p}\n{q} vs {a}")
    df = pd.DataFrame({"q": ["one"], "a": ["two"], "p": ["why"]})
    [text] = render_pairs(df, comp, "x.csv", None, ["q", "a"])
    assert (text, text.swapped) == ("why\none vs two", "why\ntwo vs one")


# ----------------------------------------------------------------------------- the cuts


def test_head_tail_keeps_the_first_and_last_tokens_of_a_long_text(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg = TransformerParams(model=str(tiny_model), max_length=MAX_LENGTH,
                            predict_views=["right", "head_tail"])
    plan = plan_views(cfg, MAX_LENGTH, NAMES)
    assert plan.cuts() == [("right", "right", None), ("head_tail", "head_tail", 8)]
    full = tok(LONG[0])["input_ids"]
    assert len(full) == 32
    cut = tokenize_texts(tok, [LONG[0], SHORT[0]], MAX_LENGTH, head_tokens=8).encodings
    assert cut.row(0)["input_ids"] == full[:8] + full[-8:]  # [CLS] + 7 first, 7 last + [SEP]
    assert cut.row(1)["input_ids"] == tok(SHORT[0])["input_ids"]  # short texts are not cut


# ----------------------------------------------------------------------------- the predictors


@pytest.fixture(scope="module")
def export(tiny_model, tmp_path_factory) -> Path:
    """A tiny BERT classifier exported whole, recording views [right, left, head_tail, swap]."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3).eval()
    model.classifier.weight.data.normal_(0, 2.0)  # untrained, but its texts' logits spread
    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg = TransformerParams(model=str(tiny_model), max_length=MAX_LENGTH, swap_columns=["q", "a"],
                            predict_views=["right", "left", "head_tail", "swap"],
                            swap_labels={"fruit": "vehicle"})
    plan = plan_views(cfg, MAX_LENGTH, NAMES)
    params = {"transformer": {"truncation_side": "right"}, "task": "multiclass",
              "max_length": MAX_LENGTH, "head_tokens": None, RECORD_KEY: plan.to_record()}
    return export_for_kaggle(model, tok, tmp_path_factory.mktemp("views") / "model", NAMES,
                             params)


def direct_views(export: Path, texts: list[PairText],
                 order: tuple[int, ...] = (1, 0, 2)) -> dict[str, np.ndarray]:
    """Each view computed by hand with the tokenizer and the model (not kit.models.hf.views);
    `order`: the swapped view's classes in the row's order."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(export).eval()
    tok = AutoTokenizer.from_pretrained(export)

    def probs(ids: list[list[int]]) -> np.ndarray:
        width = max(map(len, ids))
        pad = [row + [tok.pad_token_id] * (width - len(row)) for row in ids]
        mask = [[1] * len(row) + [0] * (width - len(row)) for row in ids]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(pad), attention_mask=torch.tensor(mask)).logits
        return torch.softmax(logits, -1).numpy()

    def cut(strings: list[str], side: str) -> list[list[int]]:
        tok.truncation_side = side
        return tok(strings, truncation=True, max_length=MAX_LENGTH)["input_ids"]

    full = tok(list(map(str, texts)))["input_ids"]
    swapped = probs(cut([t.swapped for t in texts], "right"))
    return {"right": probs(cut(texts, "right")), "left": probs(cut(texts, "left")),
            "head_tail": probs([ids if len(ids) <= MAX_LENGTH else ids[:8] + ids[-8:]
                                for ids in full]),
            "swap": swapped[:, list(order)]}  # e.g. fruit <-> vehicle back in the row's order


def pairs() -> list[PairText]:
    return pair_texts([*SHORT, *LONG], [*reversed(SHORT), *(long_text(k + 9) for k in range(4))])


def load(export: Path, backend: str = "torch"):
    params = Params(models=["transformer"], competition=CompetitionParams(text_columns=["q", "a"]),
                    transformer=TransformerParams(eval_batch_size=3))
    return get_kind("transformer").load(export.parent, params, export.parent, "cpu", None,
                                        backend)


def test_the_loaded_model_averages_the_recorded_views(export):
    texts = pairs()
    by_view = direct_views(export, texts)
    model = load(export)
    assert model.pair_columns == ("q", "a")
    np.testing.assert_allclose(model.predict(texts), np.mean(list(by_view.values()), axis=0),
                               atol=1e-5, rtol=0)
    # The cuts change long texts only; the swap changes every pair.
    short, long = slice(0, len(SHORT)), slice(len(SHORT), None)
    np.testing.assert_allclose(by_view["left"][short], by_view["right"][short], atol=1e-6)
    np.testing.assert_allclose(by_view["head_tail"][short], by_view["right"][short], atol=1e-6)
    assert np.abs(by_view["left"][long] - by_view["right"][long]).max(axis=1).min() > 1e-4
    assert np.abs(by_view["head_tail"][long] - by_view["right"][long]).max(axis=1).min() > 1e-4
    with pytest.raises(KitError, match="swap` view, which needs each row's text columns"):
        model.predict([str(t) for t in texts])


def test_an_export_without_views_predicts_as_before(export, tmp_path):
    plain = tmp_path / "model"
    shutil.copytree(export, plain)
    info = json.loads((plain / EXPORT_INFO).read_text())
    (plain / EXPORT_INFO).write_text(json.dumps({**info, RECORD_KEY: None}))
    assert ViewPlan.from_export(json.loads((plain / EXPORT_INFO).read_text())).views == ()
    texts = pairs()
    np.testing.assert_allclose(load(plain).predict(texts), direct_views(export, texts)["right"],
                               atol=1e-5, rtol=0)


def test_onnx_predicts_the_same_views(export, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'compkit[onnx]'")
    from kit.models.onnx_export import export_onnx

    folder = tmp_path / "model"
    shutil.copytree(export, folder)
    export_onnx(folder)
    texts = pairs()
    onnx = load(folder, "onnx")
    assert onnx.backend == "onnx"
    np.testing.assert_allclose(onnx.predict(texts), load(folder, "torch").predict(texts),
                               atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- 02 and serving


def pair_rows(n_per_class: int) -> pd.DataFrame:
    """Two text columns: `q` long (24 words, cut at 16 tokens), `a` short; the class shows in
    topic words spread over `q` and in `a`."""
    rows, i = [], 1
    for label, words in rw.WORDS.items():
        for k in range(n_per_class):
            q = " ".join(words[(k + j) % 10] if j % 4 == 0 else rw.FILLER[(3 * k + j) % 19]
                         for j in range(24))
            rows.append({"id": i, "q": q, "a": f"{words[k % 10]} {rw.FILLER[k % 19]}",
                         "label": NAMES[label]})
            i += 1
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_02_saves_the_views_mean_and_serving_predicts_the_same(tmp_path, tiny_model, one_thread):
    from conftest import REPO, write_competition, write_params

    from kit.core.rundir import open_run
    from kit.data.competition import load_competition
    from kit.serve.predict_file import predict_file
    from kit.serve.predictor import Predictor
    from kit.steps.decide import fit_decision_rule
    from kit.steps.train import train_models

    data = pair_rows(16)
    train = data.sample(frac=0.75, random_state=0).sort_values("id")
    write_competition(tmp_path / "data" / "pairs", train, data.drop(train.index))
    (tmp_path / "params").mkdir()
    shutil.copy(REPO / "params" / "base.yaml", tmp_path / "params" / "base.yaml")
    write_params(tmp_path / "params" / "pairs.yaml", {
        "extends": "base.yaml", "name": "pairs", "models": ["transformer"],
        "competition": {"slug": "pairs", "text_columns": ["q", "a"], "metric": "f1_micro"},
        "thresholds": {"bootstrap": 50}, "tracking": {"enabled": False},
        "transformer": {"model": str(tiny_model), "max_length": MAX_LENGTH, "max_steps": 24,
                        "eval_steps": 12, "save_steps": 12, "batch_size": 8, "lr": 2e-2,
                        "predict_views": ["right", "head_tail", "swap"]}})
    run = open_run("params/pairs.yaml", root=tmp_path)
    comp = load_competition(run.params, tmp_path)
    train_models(run, comp)
    fit_decision_rule(run, comp)

    saved = run.load_predictions("transformer")
    export = run.path / "models" / "transformer" / "model"
    assert json.loads((export / EXPORT_INFO).read_text())[RECORD_KEY]["views"] == \
        ["right", "head_tail", "swap"]
    rows = comp.train.set_index("id").loc[saved.val_ids].reset_index()
    val = render_pairs(rows, run.params.competition, "val", None, ["q", "a"])
    by_view = direct_views(export, val, order=(0, 1, 2))
    np.testing.assert_allclose(saved.val_probs,
                               np.mean([by_view[v] for v in ("right", "head_tail", "swap")], 0),
                               atol=1e-5, rtol=0)
    assert np.abs(by_view["head_tail"] - by_view["right"]).max() > 1e-4
    scores = run.read_metrics()["models"]["transformer"]["view_scores"]
    assert set(scores) == {"right", "head_tail", "swap", "mean"}

    predictor = Predictor.load(run.path, device="cpu")
    texts = predictor.render(comp.test, "test.csv")
    assert all(isinstance(t, PairText) for t in texts)
    np.testing.assert_allclose(predictor.raw_probs(texts), saved.test_probs, atol=1e-6, rtol=0)
    comp.test.to_csv(tmp_path / "new.csv", index=False)
    written = pd.read_csv(predict_file(predictor, tmp_path / "new.csv").output)
    probs = written[[f"prob_{name}" for name in predictor.labels]].to_numpy()
    np.testing.assert_allclose(probs, predictor.rule.probabilities(saved.test_probs), atol=1e-6)
    with pytest.raises(KitError, match="swap"):
        predictor.raw_probs([str(t) for t in texts])
