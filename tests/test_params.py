"""Params: strict keys and types, `extends`, overrides, and every shipped file validates."""

import dataclasses
import hashlib
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kit.cli import main as kit_main
from kit.config.params import (
    Params,
    TransformerParams,
    dump_params,
    load_params,
    params_from_dict,
)
from kit.config.reference import params_table, readme_table
from kit.data.competition import load_competition
from kit.errors import KitError
from tests.conftest import REPO, write_competition, write_params


def test_defaults_are_valid():
    params = params_from_dict({})
    assert isinstance(params, Params)
    assert params.models == ["tfidf"]


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(KitError) as err:
        params_from_dict({"competition": {"lable_column": "y"}}, source="p.yaml")
    msg = str(err.value)
    assert "p.yaml" in msg and "competition.lable_column" in msg
    assert "competition.label_column" in msg


def test_wrong_type_names_key_value_and_expected_type():
    with pytest.raises(KitError, match=r"transformer\.lr.*'fast'.*float"):
        params_from_dict({"transformer": {"lr": "fast"}})
    with pytest.raises(KitError, match=r"seed.*True.*int"):
        params_from_dict({"seed": True})  # a bool is not an int here


def test_literal_choices_are_enforced():
    with pytest.raises(KitError, match=r"competition\.task.*'binary', 'multiclass', 'multilabel'"):
        params_from_dict({"competition": {"task": "regression"}})


def test_int_widens_to_float_but_not_the_reverse():
    assert params_from_dict({"transformer": {"epochs": 2}}).transformer.epochs == 2.0
    with pytest.raises(KitError, match="max_steps"):
        params_from_dict({"transformer": {"max_steps": 1.5}})


def test_extends_merges_deeply_and_overrides_apply(tmp_path: Path):
    write_params(tmp_path / "base.yaml", {"seed": 1, "tfidf": {"C": 2.0, "max_iter": 10}})
    write_params(tmp_path / "exp.yaml", {"extends": "base.yaml", "tfidf": {"C": 8.0}})
    params = load_params(tmp_path / "exp.yaml", {"seed": 7, "tfidf.max_iter": 99})
    assert (params.seed, params.tfidf.C, params.tfidf.max_iter) == (7, 8.0, 99)


def test_overrides_are_validated_like_the_file(tmp_path: Path):
    write_params(tmp_path / "p.yaml", {})
    with pytest.raises(KitError, match=r"transformer\.epoch`\. Did you mean `transformer\.epochs"):
        load_params(tmp_path / "p.yaml", {"transformer.epoch": 1})


def test_extends_loop_is_reported(tmp_path: Path):
    write_params(tmp_path / "a.yaml", {"extends": "b.yaml"})
    write_params(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(KitError, match="loops"):
        load_params(tmp_path / "a.yaml")


def test_semantic_checks():
    with pytest.raises(KitError, match="models"):
        params_from_dict({"models": ["xgboost"]})
    with pytest.raises(KitError, match=r"validation\.size"):
        params_from_dict({"validation": {"size": 1.5}})
    with pytest.raises(KitError, match="exactly two"):
        params_from_dict({"competition": {"task": "binary", "labels": ["a", "b", "c"]}})


# Each rule a run used to apply late (training, the decision step, the memory plan) or to ignore
# (positive_label against the order of labels), with a value it refuses and what its message says.
LATE_RULES = [
    ({"transformer": {"warmup_ratio": 1.0}},
     r"transformer\.warmup_ratio is 1\.0; use a value in \[0, 1\)"),
    ({"transformer": {"eval_steps": 0}}, r"transformer\.eval_steps is 0; use a value >= 1"),
    ({"transformer": {"save_steps": 0}}, r"transformer\.save_steps is 0; use a value >= 1"),
    ({"transformer": {"eval_steps": 100, "save_steps": 50}},
     r"save_steps \(50\) must be a multiple of eval_steps \(100\).*save_steps: 100"),
    ({"transformer": {"early_stopping_patience": -1}}, r"early_stopping_patience is -1"),
    ({"transformer": {"label_smoothing": 1.0}}, r"transformer\.label_smoothing is 1\.0"),
    ({"transformer": {"epochs": 0, "max_steps": -1}}, r"epochs > 0 or transformer\.max_steps > 0"),
    ({"transformer": {"lora": {"quantization": "4bit"}}}, r"needs LoRA adapters.*enabled: true"),
    ({"transformer": {"lora": {"dropout": 1.5}}}, r"transformer\.lora\.dropout is 1\.5"),
    ({"transformer": {"time_budget_minutes": 0}},
     r"time_budget_minutes is 0\.0; use a value > 0 or null"),
    ({"thresholds": {"bootstrap": 5}},
     r"thresholds\.bootstrap is 5; use a value >= 20 \(default 200\)"),
    ({"eda": {"max_length_percentile": 0}}, r"max_length_percentile is 0.*in \(0, 100\]"),
    ({"submit": {"model": "transformer"}},
     r"`submit\.model` is 'transformer', not one of `models`"),
    ({"competition": {"task": "binary", "labels": ["yes", "no"], "positive_label": "yes"}},
     r"List them as \['no', 'yes'\]"),
]


@pytest.mark.parametrize(("raw", "message"), LATE_RULES, ids=lambda x: str(x)[:60])
def test_rules_a_run_would_apply_are_checked_when_params_are_read(raw, message):
    with pytest.raises(KitError, match=message) as err:
        params_from_dict(raw, source="p.yaml")
    assert str(err.value).startswith("p.yaml: ")


def test_rules_also_hold_for_sections_built_in_code():
    with pytest.raises(KitError, match=r"save_steps \(15\) must be a multiple of eval_steps"):
        TransformerParams(eval_steps=10, save_steps=15)


def test_kit_check_refuses_what_training_would_refuse(tmp_path: Path, capsys):
    path = write_params(tmp_path / "steps.yaml", {
        "models": ["tfidf", "transformer"],
        "transformer": {"max_steps": 400, "eval_steps": 100, "save_steps": 50},
    })
    assert kit_main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "save_steps (50) must be a multiple of eval_steps (100)" in err
    assert "e.g. set save_steps: 100 (or eval_steps: 50)" in err


def test_dump_round_trips(tmp_path: Path):
    params = params_from_dict({"transformer": {"lora": {"enabled": True, "r": 4}}})
    dump_params(params, tmp_path / "out.yaml")
    again = params_from_dict(yaml.safe_load((tmp_path / "out.yaml").read_text()))
    assert again == params


@pytest.mark.parametrize("path", sorted((REPO / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_params_file_validates(path: Path, capsys):
    params = load_params(path)
    assert params.name
    assert kit_main(["check", str(path)]) == 0, capsys.readouterr().err


ENUM_RULES = [
    ({"models": ["tfidf", "bert"]},
     r"`models\[1\]` is 'bert'; it must be one of 'tfidf', 'transformer'"),
    ({"models": ["tfidf", "tfidf"]}, r"list each model once"),
    ({"competition": {"metric": "f1macro"}}, r"Unknown metric 'f1macro'\. Did you mean 'f1_macro'"),
    ({"competition": {"metric": "f1"}},
     r"`competition\.metric` 'f1' is not defined for a multiclass task \(only binary\)"),
    ({"competition": {"task": "multilabel", "metric": "qwk"}},
     r"'qwk' is not defined for a multilabel"),
    ({"competition": {"task": "sentiment"}},
     r"competition\.task.*'binary', 'multiclass', 'multilabel'"),
    ({"transformer": {"scheduler": "step"}}, r"transformer\.scheduler.*'linear', 'cosine'"),
    ({"models": ["transformer"], "transformer": {"optimizer": "adamw_torchh"}},
     r"`transformer\.optimizer` is 'adamw_torchh'.*Did you mean 'adamw_torch'"),
    ({"competition": {"metric": "log_loss"}, "thresholds": {"multiclass_bias": True}},
     r"multiclass_bias` shifts decided labels.*'log_loss' scores probabilities"),
    ({"competition": {"text_template": "Q: {question}"}},
     r"`competition\.text_template` uses \{question\}, which is not one of"),
    ({"models": ["transformer"], "transformer": {"prompt_template": "{text} {answer}"}},
     r"`transformer\.prompt_template` uses \{answer\}"),
    ({"submit": {"kernel": "alice/run"}}, r"needs both kernel and version"),
    ({"competition": {"slug": "my comp"}}, r"Competition slug 'my comp' is not valid"),
]


@pytest.mark.parametrize(("raw", "message"), ENUM_RULES, ids=lambda x: str(x)[:60])
def test_names_are_checked_against_their_registries(raw, message):
    with pytest.raises(KitError, match=message):
        params_from_dict(raw, source="p.yaml")


def test_metrics_fit_their_tasks_and_unused_sections_stay_unchecked():
    params_from_dict({"competition": {"task": "multilabel", "metric": "roc_auc"}})
    params_from_dict({"competition": {"task": "binary", "metric": "f1"}})
    # A tfidf-only run never builds a Trainer: its transformer.optimizer is not looked up.
    params_from_dict({"models": ["tfidf"], "transformer": {"optimizer": "anything"}})



def test_optimizer_names_read_from_source_are_the_enums_of_the_installed_transformers():
    """check_optimizer reads OptimizerNames from transformers' source (its import costs seconds
    in every notebook); what it reads must be the enum itself."""
    import transformers
    from transformers.training_args import OptimizerNames

    from kit.config.section import _enum_values, optimizer_names
    source = Path(transformers.__file__).parent / "training_args.py"
    assert _enum_values(source, "OptimizerNames") == [o.value for o in OptimizerNames]
    assert optimizer_names() == [o.value for o in OptimizerNames]  # loaded: the enum itself
    assert _enum_values(source, "NoSuchEnum") == []

def test_task_is_defined_once_in_the_config():
    from kit.config import params
    from kit.evaluation import calibration, metrics, thresholds

    assert thresholds.Task is params.Task
    assert metrics.TASKS is calibration.TASKS is thresholds.TASKS is params.TASKS
    assert params.TASKS == ("binary", "multiclass", "multilabel")


def _flags_competition(project: Path, labels: list) -> None:
    """A binary competition whose label column holds `labels` as the CSV writes them."""
    texts = ["spam offer win now", "meeting at noon", "cheap pills win", "lunch tomorrow?"] * 3
    train = pd.DataFrame({"id": range(12), "text": texts, "label": labels * 3})
    test = pd.DataFrame({"id": range(100, 104), "text": texts[:4]})
    write_competition(project / "data" / "flags", train, test,
                      sample=pd.DataFrame({"id": test["id"], "label": labels[0]}))


@pytest.mark.parametrize(
    ("column", "competition", "classes", "positive_rows"),
    [
        ([1, 0, 1, 0], {"positive_label": 1}, ["0", "1"], [0, 2]),
        ([1, 0, 1, 0], {"positive_label": 0}, ["1", "0"], [1, 3]),
        ([1, 0, 1, 0], {"labels": [0, 1]}, ["0", "1"], [0, 2]),
        ([True, False, True, False], {"positive_label": True}, ["False", "True"], [0, 2]),
        (["spam", "ham", "spam", "ham"], {"label_map": {"spam": 1, "ham": 0},
                                           "positive_label": 1}, ["0", "1"], [0, 2]),
    ],
    ids=["int-1", "int-0", "declared-ints", "bool", "mapped-to-ints"],
)
def test_labels_in_params_match_the_data_as_it_has_them(project: Path, column, competition,
                                                        classes, positive_rows):
    _flags_competition(project, column)
    path = write_params(project / "params" / "flags.yaml", {
        "extends": "base.yaml", "name": "flags",
        "competition": {"slug": "flags", "task": "binary", "metric": "f1", **competition},
    })
    params = load_params(path)
    comp = load_competition(params, project)
    assert comp.labels == classes
    assert np.flatnonzero(comp.y == 1).tolist()[:2] == positive_rows
    again = params_from_dict(yaml.safe_load(yaml.safe_dump(params.to_dict())))
    assert again == params  # the run folder's params.yaml reads back equal


def test_label_values_that_are_not_scalars_are_refused():
    with pytest.raises(KitError, match=r"competition\.positive_label.*\[1\].*expected"):
        params_from_dict({"competition": {"positive_label": [1]}})
    with pytest.raises(KitError, match="lists a class twice"):
        params_from_dict({"competition": {"labels": [1, "1"]}})


def _keys(cls: type, prefix: str = ""):
    for f in dataclasses.fields(cls):
        if isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            yield from _keys(f.default_factory, f"{prefix}{f.name}.")  # a section
        else:
            yield f"{prefix}{f.name}", f


def test_every_params_key_has_a_one_line_doc():
    keys = dict(_keys(Params))
    assert len(keys) > 80 and "transformer.lora.r" in keys
    for key, f in keys.items():
        doc = f.metadata.get("help", "")
        assert doc and "\n" not in doc and len(doc) <= 90, key


def test_readme_params_table_is_the_one_rendered_from_the_schema():
    assert readme_table(REPO / "README.md") == params_table(), (
        "README.md's params table differs from the schema: run "
        "`python -m kit params-doc README.md` and commit the result."
    )


def test_params_table_shows_defaults_ranges_and_choices():
    table = params_table()
    assert "| `transformer.warmup_ratio` | `0.06` | number in [0, 1) |" in table
    assert "| `competition.task` | `multiclass` | `binary`, `multiclass`, `multilabel` |" in table
    assert "| `competition.positive_label` | `null` | label or null |" in table
    assert "| `f1` | binary | labels |" in table


def _run_all_in(project: Path) -> Path:
    """run_all.sh in `project`, with a ready environment: a venv over this interpreter's packages.

    The venv's install stamp matches, so run_all.sh installs nothing and goes straight to the run.
    """
    stamped = ("pyproject.toml", "requirements-lock.txt", "run_all.sh")  # run_all.sh's order
    for name in stamped:
        shutil.copy2(REPO / name, project / name)
    (project / "kit").symlink_to(REPO / "kit")
    venv = project / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    prefix = subprocess.run([venv / "bin" / "python", "-c", "import sys, site; "
                             "print(sys.prefix); print(site.getsitepackages()[0])"],
                            capture_output=True, text=True, check=True).stdout.split()
    Path(prefix[1], "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    stamp = hashlib.sha256(b"".join((project / n).read_bytes() for n in stamped)).hexdigest()[:16]
    Path(prefix[0], ".compkit-installed").write_text(stamp + "\n")
    return project / "run_all.sh"


def test_run_all_stops_with_the_kit_error_on_bad_params(project: Path):
    script = _run_all_in(project)
    write_params(project / "params" / "broken.yaml", {
        "extends": "topics.yaml", "models": ["tfidf", "transformer"],
        "transformer": {"eval_steps": 100, "save_steps": 50},
    })
    proc = subprocess.run([str(script), "params/broken.yaml"], capture_output=True, text=True,
                          cwd=project, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "error: " in proc.stderr and "must be a multiple of eval_steps" in proc.stderr
    assert "unbound variable" not in proc.stderr and "== 01_eda" not in proc.stderr
    assert "Installing" not in proc.stderr  # the environment was taken as ready


def test_checking_params_prints_no_bitsandbytes_noise():
    done = subprocess.run([sys.executable, "-m", "kit", "check", "params/demo.yaml"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    assert "params/demo.yaml: ok" in done.stdout
    assert "gemm_4bit_forward" not in done.stderr, done.stderr
