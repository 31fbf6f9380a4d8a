"""Exports for internet-off Kaggle notebooks: save -> reload gives the same predictions, offline."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors import safe_open
from test_llm import (
    LABEL_NAMES,
    load,
    logits_of,
    make_checkpoint,
    make_prequantized_checkpoint,
    train_steps,
)

from kit.errors import KitError
from kit.models.export import EXPORT_INFO, export_for_kaggle, load_exported

PARAMS = {"name": "tiny", "transformer": {"model": "tiny-llama", "lora": {"r": 8}}}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("base") / "llama", "llama")


@pytest.fixture(scope="module")
def trained(base):
    """A LoRA classifier trained a few steps (so its head is far from any fresh init)."""
    model, tok = load(base, dropout=0.0)
    train_steps(model, tok, steps=10)
    return model, tok


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_adapter_export_reloads_with_identical_predictions(base, tmp_path, quantization):
    model, tok = load(base, quantization=quantization, dropout=0.0)
    train_steps(model, tok, steps=6)
    before = logits_of(model, tok)
    out = export_for_kaggle(model, tok, tmp_path / "export", LABEL_NAMES, PARAMS, merge=False)

    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["kind"] == "adapter" and info["base_model"] == str(base)
    assert info["head_modules"] == ["score"]
    assert not list(out.glob("model*.safetensors"))  # the base is recorded, not copied
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert any(".score." in k for k in f.keys())  # noqa: SIM118 - safe_open has no __iter__
    if quantization == "4bit":
        assert info["quantization"]["bnb_4bit_quant_type"] == "nf4"

    reloaded, tok2, labels = load_exported(out)
    assert labels == LABEL_NAMES
    assert reloaded.config.pad_token_id == tok2.pad_token_id == tok.pad_token_id
    after = logits_of(reloaded, tok2)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    fresh, _ = load(base, quantization=quantization, seed=1)
    assert (logits_of(fresh, tok) - before).abs().max() > 1e-3  # so the head is not re-random


def test_adapter_export_of_a_prequantized_base_reloads_with_identical_predictions(tmp_path):
    """A *-bnb-4bit checkpoint stores its unquantized weights (embeddings, norms) in bfloat16;
    they trained in float32 (peft's k-bit preparation), and so must they reload."""
    base = make_prequantized_checkpoint(tmp_path / "llama-bnb-4bit")
    model, tok = load(base, quantization="4bit", dropout=0.0)
    train_steps(model, tok, steps=4)
    before = logits_of(model, tok)
    out = export_for_kaggle(model, tok, tmp_path / "export", LABEL_NAMES, PARAMS, merge=False)
    reloaded, tok2, _ = load_exported(out)
    torch.testing.assert_close(logits_of(reloaded, tok2), before, atol=1e-6, rtol=0)


def test_merged_export_is_self_contained(base, trained, tmp_path):
    model, tok = trained
    before = logits_of(model, tok)
    copy = tmp_path / "base_copy"
    shutil.copytree(base, copy)
    model.peft_config["default"].base_model_name_or_path = str(copy)
    merged32 = export_for_kaggle(
        model, tok, tmp_path / "m32", LABEL_NAMES, PARAMS, merge=True, merged_dtype="float32"
    )
    merged16 = export_for_kaggle(model, tok, tmp_path / "m16", LABEL_NAMES, PARAMS, merge=True)
    model.peft_config["default"].base_model_name_or_path = str(base)
    shutil.rmtree(copy)  # the base is gone: merged exports must not need it

    assert json.loads((merged16 / EXPORT_INFO).read_text())["kind"] == "merged"
    m32, tok32, _ = load_exported(merged32)
    torch.testing.assert_close(logits_of(m32, tok32), before, atol=1e-4, rtol=1e-4)
    m16, tok16, _ = load_exported(merged16)
    after16 = logits_of(m16, tok16)
    assert torch.equal(after16.argmax(-1), before.argmax(-1))
    torch.testing.assert_close(after16, before, atol=5e-2, rtol=5e-2)
    # The caller's model was not merged in place.
    assert any(".lora_A." in n for n, _ in model.named_parameters())


def test_missing_base_names_the_fix_and_base_model_argument_finds_it(base, trained, tmp_path):
    model, tok = trained
    out = export_for_kaggle(model, tok, tmp_path / "adapter", LABEL_NAMES, PARAMS)
    info = json.loads((out / EXPORT_INFO).read_text())
    moved = tmp_path / "attached_dataset"
    shutil.copytree(base, moved)
    info["base_model"] = str(tmp_path / "not_here")  # as on Kaggle: another machine's path
    (out / EXPORT_INFO).write_text(json.dumps(info))
    with pytest.raises(KitError, match="base_model="):
        load_exported(out)
    reloaded, tok2, _ = load_exported(out, base_model=moved)
    torch.testing.assert_close(logits_of(reloaded, tok2), logits_of(model, tok), atol=1e-6, rtol=0)
    assert "load_exported" in (out / "README.md").read_text()
    assert yaml.safe_load((out / "params.yaml").read_text()) == PARAMS


def test_a_folder_that_is_not_an_export_is_refused(tmp_path):
    with pytest.raises(KitError, match="not a kit export"):
        load_exported(tmp_path)


def test_label_names_must_match_the_head(trained, tmp_path):
    model, tok = trained
    with pytest.raises(KitError, match="2 label names"):
        export_for_kaggle(model, tok, tmp_path / "x", ["a", "b"], PARAMS)
    assert not (tmp_path / "x").exists()
