"""The token cache: a hit returns the same tokens, read from its file; other texts, cut or
tokenizer miss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import resume_worker as rw
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kit.data.cache import EVENTS
from kit.models.hf.data import predict_probs, tokenize_texts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple:
    folder = rw.build_tiny_model(tmp_path_factory.mktemp("tiny") / "bert")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _items(ds) -> list[dict]:
    return [ds[i] for i in range(len(ds))]


def test_second_tokenisation_is_a_hit_read_from_the_file_not_mapped(tiny, tmp_path):
    """A hit reads rows from the cache file; no mapping of it stays in the process, so random
    rows cannot pull the file's pages (and the kernel's read-ahead) into its resident set."""
    import pickle

    _, tok = tiny
    texts, labels = rw.make_corpus(41, seed=3)
    plain = tokenize_texts(tok, texts, 24, labels)
    misses = EVENTS["tokens miss"]
    cold = tokenize_texts(tok, texts, 24, labels, cache_dir=tmp_path)
    assert EVENTS["tokens miss"] == misses + 1 and len(list(tmp_path.glob("*.arrow"))) == 1
    hits = EVENTS["tokens hit"]
    warm = tokenize_texts(tok, texts, 24, labels, cache_dir=tmp_path)
    assert EVENTS["tokens hit"] == hits + 1
    assert _items(warm) == _items(cold) == _items(plain)
    assert warm.lengths == plain.lengths
    (path,) = tmp_path.glob("*.arrow")
    maps = Path("/proc/self/maps")
    if maps.is_file():  # Linux
        assert str(path) not in maps.read_text()
    for where, _ in warm.encodings.batches:  # file positions, no token arrays held
        assert all(isinstance(pos, int) for pos in where.values())
    copy = pickle.loads(pickle.dumps(warm.encodings))  # a spawned DataLoader worker's copy
    assert [copy.row(i) for i in range(len(texts))] == [warm.encodings.row(i)
                                                         for i in range(len(texts))]


def test_many_batches_and_no_texts(tiny, tmp_path, monkeypatch):
    from kit.models.hf import token_cache

    _, tok = tiny
    monkeypatch.setattr(token_cache, "BATCH_TEXTS", 4)  # 41 texts: 11 record batches
    texts, labels = rw.make_corpus(41, seed=8)
    cold = tokenize_texts(tok, texts, 24, labels, cache_dir=tmp_path)
    assert len(cold.encodings.batches) == 11
    assert _items(cold) == _items(tokenize_texts(tok, texts, 24, labels))
    empty = tokenize_texts(tok, [], 24, cache_dir=tmp_path)
    assert len(empty) == 0 and "input_ids" in empty.encodings.keys


def test_other_texts_cut_or_tokenizer_miss_the_cache(tiny, tmp_path):
    _, tok = tiny
    texts, _ = rw.make_corpus(20, seed=4)
    tokenize_texts(tok, texts, 24, cache_dir=tmp_path)
    tokenize_texts(tok, texts, 16, cache_dir=tmp_path)  # another max_length
    tokenize_texts(tok, [*texts[:-1], texts[-1] + " more"], 24, cache_dir=tmp_path)
    tokenize_texts(tok, texts, 24, head_tokens=4, cache_dir=tmp_path)  # another cut
    other = AutoTokenizer.from_pretrained(tok.name_or_path)
    other.add_tokens(["brandnewword"])  # another vocabulary
    tokenize_texts(other, texts, 24, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.arrow"))) == 5


def test_inference_reads_the_cached_tokens(tiny, tmp_path):
    model, tok = tiny
    texts, _ = rw.make_corpus(23, seed=6)
    plain = predict_probs(model, tok, texts, 8, 32, "multiclass", progress=False)
    cold = predict_probs(model, tok, texts, 8, 32, "multiclass", progress=False,
                         cache_dir=tmp_path)
    hits = EVENTS["tokens hit"]
    warm = predict_probs(model, tok, texts, 8, 32, "multiclass", progress=False,
                         cache_dir=tmp_path)
    assert EVENTS["tokens hit"] == hits + 1
    np.testing.assert_allclose(warm, plain, atol=1e-6)
    np.testing.assert_allclose(cold, plain, atol=1e-6)


def test_arrow_texts_tokenise_to_the_same_tokens_and_the_same_cache_file(tiny, tmp_path,
                                                                          monkeypatch):
    import pyarrow as pa

    from kit.data.arrow_rows import ArrowRows, TextColumn, write_arrow_file
    from kit.models.hf import data, token_cache

    _, tok = tiny
    monkeypatch.setattr(token_cache, "BATCH_TEXTS", 4)  # streamed in many small batches
    monkeypatch.setattr(data, "_CHUNK", 3)
    texts, labels = rw.make_corpus(30, seed=9)
    path = tmp_path / "texts.arrow"
    write_arrow_file(path, pa.schema([("text", pa.string())]),
                     ({"text": texts[i : i + 7]} for i in range(0, 30, 7)))
    column = TextColumn(ArrowRows(path))
    assert token_cache.texts_digest(column) == token_cache.texts_digest(texts)
    plain = tokenize_texts(tok, texts, 24, labels, head_tokens=5)
    uncached = tokenize_texts(tok, column, 24, labels, head_tokens=5)
    cold = tokenize_texts(tok, column, 24, labels, head_tokens=5, cache_dir=tmp_path / "c")
    hits = EVENTS["tokens hit"]
    warm = tokenize_texts(tok, texts, 24, labels, head_tokens=5, cache_dir=tmp_path / "c")
    assert EVENTS["tokens hit"] == hits + 1  # a list of the same texts finds the same file
    assert _items(uncached) == _items(cold) == _items(warm) == _items(plain)
