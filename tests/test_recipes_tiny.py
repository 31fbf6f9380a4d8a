"""Every shipped params file, end to end on a tiny model of its family: train, decide, submit.

Only the model's size differs from the real run (plus a few dozen rows and two steps): LoRA
settings, 4-bit quantization, `unsloth: auto`, the optimizer, gradient checkpointing, the
truncation side, templates, label maps, class weights, thresholds and the dry-run submission are
the recipe's own. A new params file is covered as soon as it is shipped; its model needs an entry
in tests/helpers/tiny_recipes.py REAL_MODELS, its competition demo data or a synthetic writer.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoConfig

from kit.config.distill import student_transformer
from kit.config.params import Params, TransformerParams, diff_params, load_params
from kit.core.model_source import cache_dir, resolve_model
from kit.core.rundir import FINISHED, RunDir, open_run
from kit.data.competition import Competition, load_competition, render_texts
from kit.data.demos import DEMOS
from kit.data.readers import read_table
from kit.errors import KitError
from kit.models.export import EXPORT_INFO, load_exported
from kit.models.hardware import detect_hardware
from kit.models.hf.data import predict_probs
from kit.models.kinds.base import fit_dirs
from kit.models.llm.lora import resolve_optimizer
from kit.steps.decide import RULE_FILE, fit_decision_rule
from kit.steps.submit import make_submission
from kit.steps.train import train_models
from kit.submission.build import validate_submission
from tests.conftest import REPO
from tests.helpers.tiny_recipes import (
    REAL_MODELS,
    SYNTHETIC,
    build_tiny_model,
    family_of,
    write_synthetic_competition,
)

SHIPPED = sorted(p.stem for p in (REPO / "params").glob("*.yaml") if p.stem != "base")
N_ROWS = 64  # training rows of a demo competition; synthetic ones are written with 64 + 16
SHRUNK = ("model", "max_steps", "eval_steps", "save_steps", "batch_size", "max_length",
          "keep_checkpoints")  # kept to read what Trainer really ran
# What the tiny runs change; everything else must equal the shipped params. A student's own
# `distill.transformer` keys among them are shrunk too; k-fold recipes run 2 folds and seeded
# ones their first 2 seeds (the k-fold and seed-averaging paths, at CI's cost).
CHANGED_KEYS = {"competition.max_rows", "competition.data_dir", "cv.folds",
                *(f"{section}.{key}" for section in ("transformer", "distill.transformer")
                  for key in (*SHRUNK, "seeds"))}
TUNED = ("transformer", "student")  # the kinds that fine-tune a transformer (a student is one)

# A shipped recipe the kit refuses today, with the refusal: the parametrization fails strictly,
# so it must be removed here once the recipe runs.
def shipped_params(name: str) -> Params:
    return load_params(REPO / "params" / f"{name}.yaml")


def shrunk_steps(shipped: Params) -> dict:
    """Two steps of batch <= 4 on 64 tokens. eval_steps becomes 2 and save_steps is scaled by
    the same factor, so the recipe's own relation between the two still meets the kit's check.
    A student's own keys (`distill.transformer`) are shrunk the same way."""
    out = {}
    for kind in tuned_kinds(shipped):
        t = settings(shipped, kind)
        steps = {"max_steps": 2, "eval_steps": 2,
                 "save_steps": max(1, round(t.save_steps * 2 / t.eval_steps)),
                 "batch_size": min(4, t.batch_size), "max_length": 64}
        out.update({key_of(shipped, kind, k): v for k, v in steps.items()})
    return out


def key_of(shipped: Params, kind: str, key: str) -> str:
    """Where `kind`'s transformer setting `key` is overridden: a student's own
    `distill.transformer.<key>` when its recipe sets one, else `transformer.<key>`."""
    own = kind == "student" and key in shipped.distill.transformer
    return f"distill.transformer.{key}" if own else f"transformer.{key}"


def tuned_kinds(shipped: Params) -> list[str]:
    """The recipe's models that fine-tune a transformer."""
    return [kind for kind in shipped.models if kind in TUNED]


def settings(shipped: Params, kind: str) -> TransformerParams:
    """What `kind` trains with: `transformer`, or a student's merged settings."""
    return student_transformer(shipped) if kind == "student" else shipped.transformer


def tiny_overrides(shipped: Params, tmp_path: Path, tiny_model) -> dict:
    """The recipe at toy size: its data (a demo's first rows, or synthetic), tiny models of its
    families, two training steps."""
    slug = shipped.competition.slug
    overrides: dict = {}
    if slug in DEMOS:  # built offline under tmp_path/data/<slug> by the kit itself
        overrides["competition.max_rows"] = N_ROWS
    elif not (tmp_path / "data" / slug).is_dir():
        folder = write_synthetic_competition(slug, tmp_path / "data" / slug)
        overrides["competition.data_dir"] = str(folder)
    else:
        overrides["competition.data_dir"] = str(tmp_path / "data" / slug)
    if shipped.cv.folds > 2:  # a teacher run and its student alike: the same 2 folds
        overrides["cv.folds"] = 2
    for kind in tuned_kinds(shipped):
        cfg = settings(shipped, kind)
        if cfg.seeds and len(cfg.seeds) > 2:  # seed averaging over 2 seeds
            overrides[key_of(shipped, kind, "seeds")] = cfg.seeds[:2]
        model_dir = tiny_model(cfg.model)
        assert AutoConfig.from_pretrained(model_dir).model_type == family_of(cfg.model).model_type
        overrides[key_of(shipped, kind, "model")] = str(model_dir)
        overrides["transformer.keep_checkpoints"] = True  # training_args.bin is read below
    overrides.update(shrunk_steps(shipped))
    return overrides


def train_teacher_run(shipped: Params, tmp_path: Path, tiny_model) -> None:
    """A student's teacher run (`distill.teacher: <run>`), trained first at toy size."""
    spec = shipped.distill.teacher
    if "student" not in shipped.models or spec in shipped.models:
        return
    run_name = Path(spec.split(":")[0]).name
    recipes = [n for n in SHIPPED if shipped_params(n).name == run_name]
    assert recipes, f"no shipped params file trains the teacher run {run_name!r}"
    teacher = shipped_params(recipes[0])
    run = open_run(f"params/{recipes[0]}.yaml",
                   overrides=tiny_overrides(teacher, tmp_path, tiny_model))
    train_models(run, load_competition(run.params))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """tiny_model(name) -> the folder of a tiny model of `name`'s family (built once)."""
    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_tiny_model(name, root / re.sub(r"\W+", "-", name))
        return built[name]

    return get


def test_every_shipped_model_has_a_tiny_family_of_the_same_model_type():
    """A recipe's model must be in REAL_MODELS; where the real model is here, its type agrees."""
    recipes = {n: shipped_params(n) for n in SHIPPED}
    missing = [f"params/{n}.yaml: {model}" for n, p in recipes.items()
               for model in {settings(p, kind).model for kind in tuned_kinds(p)}
               if model not in REAL_MODELS]
    assert not missing, (
        f"No tiny family for {missing}: add the hub id, the real config.model_type and the "
        "config class to tests/helpers/tiny_recipes.py REAL_MODELS.")
    minilm = AutoConfig.from_pretrained(resolve_model("minilm"), local_files_only=True)
    assert minilm.model_type == REAL_MODELS["minilm"].model_type
    smollm2 = cache_dir() / "smollm2-135m"  # converted once by the slow SmolLM2 tests
    if (smollm2 / "config.json").is_file():
        real = AutoConfig.from_pretrained(smollm2, local_files_only=True).model_type
        assert real == REAL_MODELS["smollm2-135m"].model_type


def test_every_shipped_competition_has_data_for_the_tiny_run():
    for name in SHIPPED:
        slug = shipped_params(name).competition.slug
        assert slug in DEMOS or slug in SYNTHETIC, (
            f"params/{name}.yaml: competition {slug!r} is neither a demo nor in "
            "tests/helpers/tiny_recipes.py SYNTHETIC; add a writer in its real layout.")


def transformer_texts(run: RunDir, comp: Competition, kind: str = "transformer") -> list[str]:
    """The test texts as the training step rendered them (prompt_template, else the template)."""
    template = settings(run.params, kind).prompt_template
    if template is None:
        return comp.test_texts
    return render_texts(comp.test, run.params.competition, "test", template)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_runs_end_to_end_on_a_tiny_model(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model, capsys,
):
    started = time.monotonic()
    shipped = shipped_params(name)
    monkeypatch.setenv("COMPKIT_ROOT", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "params").symlink_to(REPO / "params")
    overrides = tiny_overrides(shipped, tmp_path, tiny_model)
    train_teacher_run(shipped, tmp_path, tiny_model)
    tuned = tuned_kinds(shipped)
    has_transformer = bool(tuned)
    if has_transformer:
        kind = tuned[0]  # the checks below read this model's training
        cfg = settings(shipped, kind)
        family = family_of(cfg.model)

    run = open_run(f"params/{name}.yaml", overrides=overrides)
    changed = {line.split(":")[0] for line in diff_params(shipped.to_dict(),
                                                          run.params.to_dict())}
    assert changed <= CHANGED_KEYS, f"the tiny run changed more than size: {changed}"
    comp = load_competition(run.params)
    lora = cfg.lora if has_transformer else shipped.transformer.lora
    if has_transformer and lora.enabled and lora.unsloth == "require":
        with pytest.raises(KitError, match="'require' but there is no CUDA GPU"):
            train_models(run, comp)
        return

    table = train_models(run, comp)
    decision = fit_decision_rule(run, comp)
    result = make_submission(run, comp)
    run.finish()
    out = capsys.readouterr().out

    # The run folder: predictions of every model, the rule, a validated submission, FINISHED.
    members = [*shipped.models, *(["ensemble"] if shipped.ensemble.enabled else [])]
    assert list(table.index) == members
    for member in members:
        preds = run.load_predictions(member)
        assert preds.test_probs.shape == (len(comp.test), len(comp.labels))
        assert np.array_equal(preds.test_ids, comp.test_ids)
    assert (run.path / RULE_FILE).is_file() and (run.path / FINISHED).is_file()
    rule = json.loads((run.path / RULE_FILE).read_text())
    assert rule["kind"] == decision.rule.kind and rule["labels"] == comp.labels
    sub = pd.read_csv(run.path / "submission.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(comp.folder / shipped.competition.sample_submission_file, dtype=str,
                         keep_default_na=False)
    assert list(sub.columns) == list(sample.columns)
    assert sub[comp.id_column].tolist() == sample[comp.id_column].tolist()
    on_disk = read_table(run.path / "submission.csv", id_column=comp.id_column)
    validate_submission(on_disk, comp, shipped.submit.prediction,
                        shipped.competition.label_delimiter)
    assert result.file.parent == run.path / "submissions" and result.answer.startswith("dry run")
    assert result.file.read_bytes() == (run.path / "submission.csv").read_bytes()

    row = {"recipe": name, "family": "tfidf only", "backend": "-", "quantization": "-",
           "optimizer": "-"}
    if has_transformer:
        assert table.loc[kind, "global_step"] == 2
        row["family"] = f"{family.config.__name__} ({family.model_type})"
        profile = detect_hardware()
        expected_optim, optim_notice = resolve_optimizer(cfg.optimizer, profile)
        first_fit = run.models / kind / ("r0_f0" if shipped.cv.folds > 1 else "")  # k-fold
        if cfg.seeds:  # each seed's fit in its own folder (kit.models.kinds.base.model_dir)
            first_fit = first_fit / f"s{cfg.seeds[0]}"
        args = torch.load(first_fit / "checkpoints" / "checkpoint-2"
                          / "training_args.bin", weights_only=False)  # what Trainer really ran
        assert args.optim == expected_optim
        assert args.activation_checkpointing == cfg.gradient_checkpointing
        assert args.gradient_accumulation_steps == cfg.grad_accum
        row["optimizer"] = getattr(args.optim, "value", args.optim)
        if lora.enabled:
            report = json.loads((run.path / "llm_report.json").read_text())
            assert report["backend"] == "peft"
            assert report["quantization"] == lora.quantization
            assert report["optimizer"] == expected_optim
            if optim_notice:
                assert optim_notice in report["notices"] and optim_notice in out
            if lora.unsloth == "auto":  # falls back to peft here, with one line saying why
                notice = "unsloth not used: there is no CUDA GPU (unsloth needs one); training " \
                         "with peft"
                assert notice in report["notices"] and out.count(notice) == 1
            row.update(backend=report["backend"], quantization=report["quantization"])
        else:
            row.update(backend="encoder (full fine-tune)", quantization="none")
        _assert_export_predicts_the_saved_probabilities(run, comp, kind)
    row["seconds"] = round(time.monotonic() - started, 1)
    with capsys.disabled():  # the per-recipe table of the report
        print("\nRECIPE", json.dumps(row))


def _assert_export_predicts_the_saved_probabilities(run: RunDir, comp: Competition,
                                                    kind: str) -> None:
    """The export folder, loaded as a Kaggle notebook would, gives the run's test probabilities
    (k-fold, seeds: the mean of every fit's export)."""
    exports = [d / "model" for d in fit_dirs(run.models / kind, merged=False)]  # fold, seed
    texts = transformer_texts(run, comp, kind)
    fold_probs = []
    for model_dir in exports:
        info = json.loads((model_dir / EXPORT_INFO).read_text())
        model, tokenizer, labels = load_exported(model_dir)
        assert labels == comp.labels
        assert tokenizer.truncation_side == settings(run.params, kind).truncation_side
        if tokenizer.truncation_side == "left":  # texts are cut, so the side is really compared
            assert max(len(ids) for ids in tokenizer(texts)["input_ids"]) > info["max_length"]
        fold_probs.append(predict_probs(model, tokenizer, texts, 16, info["max_length"],
                                        comp.task, progress=False))
    seeds = settings(run.params, kind).seeds or [None]
    assert len(exports) == run.params.cv.folds * run.params.cv.repeats * len(seeds)
    saved = run.load_predictions(kind).test_probs
    np.testing.assert_allclose(np.mean(fold_probs, axis=0), saved, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_unsloth_require_is_refused_on_cpu_with_its_documented_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model,
):
    """A GPU-only setting on a shipped LLM recipe: refused before any model is loaded."""
    monkeypatch.setenv("COMPKIT_ROOT", str(tmp_path))
    (tmp_path / "params").symlink_to(REPO / "params")
    folder = write_synthetic_competition("math-topic", tmp_path / "data" / "math-topic")
    run = open_run("params/math-topic.yaml", overrides={
        "models": ["transformer"], "competition.data_dir": str(folder),
        "transformer.model": str(tiny_model("microsoft/Phi-4-mini-reasoning")),
        "transformer.lora.unsloth": "require", **shrunk_steps(shipped_params("math-topic"))})
    with pytest.raises(KitError, match=r"'require' but there is no CUDA GPU.*Fix: set "
                                       r"transformer.lora.unsloth to 'auto'"):
        train_models(run, load_competition(run.params))
    assert not (run.models / "transformer" / "model").exists()
