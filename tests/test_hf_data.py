"""Tokenising, padding and batching: dynamic padding only, length-grouped batches with a
resumable order, sorted inference that returns rows in input order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import resume_worker as rw
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

from kit.errors import KitError
from kit.models.hf.data import (
    EpochSeededLengthGroupedSampler,
    make_collator,
    predict_probs,
    suggest_max_length,
    token_lengths,
    tokenize_texts,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple:
    folder = rw.build_tiny_model(tmp_path_factory.mktemp("tiny") / "bert")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3).eval()
    return model, AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_sorted_inference_equals_unsorted_in_input_order(tiny, task):
    model, tok = tiny
    texts, _ = rw.make_corpus(37, seed=5)
    sorted_probs = predict_probs(model, tok, texts, 8, 48, task, progress=False)
    unsorted = predict_probs(model, tok, texts, 8, 48, task, sort_by_length=False,
                             progress=False)
    one_by_one = np.concatenate(
        [predict_probs(model, tok, [t], 1, 48, task, progress=False) for t in texts[:6]])
    assert sorted_probs.shape == (37, 3)
    np.testing.assert_allclose(sorted_probs, unsorted, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sorted_probs[:6], one_by_one, rtol=0, atol=1e-6)
    assert not np.allclose(sorted_probs[0], sorted_probs[1])  # rows really differ
    if task == "multilabel":
        assert not np.allclose(sorted_probs.sum(axis=1), 1.0)
    else:
        np.testing.assert_allclose(sorted_probs.sum(axis=1), 1.0, atol=1e-6)
    assert predict_probs(model, tok, [], 8, 48, task, progress=False).shape == (0, 3)


def test_batches_pad_to_their_longest_text_never_to_max_length(tiny):
    _, tok = tiny
    texts = ["red car", "the apple and the pear of some very green bus"]
    ds = tokenize_texts(tok, texts, max_length=48, labels=np.array([1, 0]))
    batch = make_collator(tok)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, max(ds.lengths)) and max(ds.lengths) < 48
    assert batch["labels"].dtype == torch.int64
    alone = make_collator(tok)([ds[0]])
    assert alone["input_ids"].shape == (1, ds.lengths[0])
    hot = tokenize_texts(tok, texts, 48, labels=np.array([[1, 0, 1], [0, 1, 0]]),
                         task="multilabel")
    assert make_collator(tok)([hot[0], hot[1]])["labels"].dtype == torch.float32


def test_truncation_side_keeps_start_or_end(tiny):
    _, tok = tiny
    text = "apple banana cherry grape lemon mango melon"
    right = tokenize_texts(tok, [text], max_length=4, truncation_side="right")[0]["input_ids"]
    left = tokenize_texts(tok, [text], max_length=4, truncation_side="left")[0]["input_ids"]
    assert tok.decode(right, skip_special_tokens=True) == "apple banana"
    assert tok.decode(left, skip_special_tokens=True) == "mango melon"
    with pytest.raises(KitError, match="truncation_side is 'middle'"):
        tokenize_texts(tok, [text], max_length=4, truncation_side="middle")


def test_head_tail_keeps_first_and_last_tokens(tiny):
    model, tok = tiny
    text = "apple banana cherry grape lemon mango melon"
    full = tok(text)["input_ids"]  # [CLS] 7 words [SEP]: 9 ids
    assert len(full) == 9
    cut = tokenize_texts(tok, [text, "red car"], max_length=5, truncation_side="head_tail",
                         head_tokens=2)
    assert cut[0]["input_ids"] == full[:2] + full[-3:]  # [CLS] apple | mango melon [SEP]
    assert tok.decode(cut[0]["input_ids"], skip_special_tokens=True) == "apple mango melon"
    assert cut[0]["attention_mask"] == [1] * 5
    assert cut[1]["input_ids"] == tok("red car")["input_ids"]  # short texts are not cut
    assert tok.truncation_side == "right"  # the tokenizer keeps a side it can save
    # null head_tokens: a quarter of max_length from the start, the rest from the end.
    default = tokenize_texts(tok, [text], max_length=8, truncation_side="head_tail")[0]
    assert default["input_ids"] == full[:2] + full[-6:]
    # Inference cuts the same way: the probabilities are those of the cut ids.
    probs = predict_probs(model, tok, [text], 4, 5, "multiclass", progress=False,
                          head_tokens=2)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full[:2] + full[-3:]])).logits
    np.testing.assert_allclose(probs, torch.softmax(logits, -1).numpy(), rtol=0, atol=1e-6)
    with pytest.raises(KitError, match=r"head_tokens is 5; .* \[1, 4\]"):
        tokenize_texts(tok, [text], max_length=5, truncation_side="head_tail", head_tokens=5)


def test_length_grouped_order_depends_only_on_seed_and_epoch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 200, size=400).tolist()
    sampler = EpochSeededLengthGroupedSampler(batch_size=16, lengths=lengths, seed=42)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    again = EpochSeededLengthGroupedSampler(batch_size=16, lengths=lengths, seed=42)
    again.set_epoch(1)
    assert list(again) == epoch1 and epoch0 != epoch1
    assert sorted(epoch0) == sorted(epoch1) == list(range(400))  # permutations
    # Batches hold similar lengths: far less padding than random batches.
    def padding(order):
        batches = [np.array(lengths)[order[i : i + 16]] for i in range(0, 400, 16)]
        return sum(int((b.max() - b).sum()) for b in batches)

    assert padding(epoch0) < 0.25 * padding(rng.permutation(400).tolist())


def test_trainer_api_for_length_grouping(tmp_path):
    # transformers 5.23 removed `group_by_length=True`; the kit uses train_sampling_strategy.
    args = TrainingArguments(output_dir=str(tmp_path), train_sampling_strategy="group_by_length")
    assert args.train_sampling_strategy == "group_by_length"
    with pytest.raises(TypeError):
        TrainingArguments(output_dir=str(tmp_path), group_by_length=True)


def test_token_lengths_and_suggested_max_length(tiny):
    _, tok = tiny
    texts = ["red"] * 98 + ["red " * 30, "red " * 200]
    lengths = token_lengths(tok, texts)
    assert lengths.tolist()[:1] == [3] and lengths[-1] == 202  # [CLS] ... [SEP], untruncated
    assert suggest_max_length(tok, texts, 50) == 8  # 3 tokens, rounded up to a multiple of 8
    assert suggest_max_length(tok, texts, 99) == 40  # 99th percentile (~31.7) -> 40
    assert suggest_max_length(tok, texts, 100) == 64  # 202 capped at the model's 64
    with pytest.raises(KitError, match="percentile is 0"):
        suggest_max_length(tok, texts, 0)


def test_tokenize_checks_label_count(tiny):
    _, tok = tiny
    with pytest.raises(KitError, match="2 texts but 1 labels"):
        tokenize_texts(tok, ["a", "b"], 8, labels=np.array([1]))


def test_tiny_model_builds_deterministically(tmp_path):
    a = rw.build_tiny_model(tmp_path / "a")
    b = rw.build_tiny_model(tmp_path / "b")
    for name in ("tokenizer.json", "model.safetensors"):
        assert Path(a, name).read_bytes() == Path(b, name).read_bytes()
