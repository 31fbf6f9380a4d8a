"""A cache of tokenised texts as Arrow files, keyed by texts, tokenizer and cut.

`tokenize_texts` (kit.models.hf.data) calls `cached_encodings` when given a cache folder. A hit
opens the Arrow IPC file: token ids stay on disk until a batch reads them, so a
million tokenised rows cost page cache, not process memory, and a rerun after a killed session
skips tokenisation. The file is Arrow IPC with one `large_list<int32>` column per model input
(input_ids, attention_mask, ...), in record batches of 16k texts written as they are
tokenised, so the cold path holds one batch, never all the tokens; `ArrowEncodings` reads a
row's tokens from the file when a batch asks for it. (pyarrow directly rather than
`datasets`: the texts are streamed in, the tokens written batch by batch and read back as numpy
views; `datasets`' batched `map` reads its input through the memory map, which measured 2.3 GB
of peak RSS on a million texts where the streamed read stays near 0.3 GB; kit.data.arrow_rows.)

The key is a SHA-256 over: every text (BLAKE2b of their UTF-8 bytes, in order), the tokenizer
(class, name, the full serialised fast tokenizer or its vocabulary, special tokens, truncation
side), `max_length` and `head_tokens`. The template is in the texts, so it is keyed too.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kit.data.arrow_rows import text_batches
from kit.data.cache import EVENTS

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def texts_digest(texts: Sequence[str]) -> str:
    """BLAKE2b of the texts in order (a separator keeps ["ab", "c"] apart from ["a", "bc"]).

    Texts in an Arrow TextColumn are streamed, batch by batch."""
    digest = hashlib.blake2b(digest_size=20)
    for text in (t for part in text_batches(texts, BATCH_TEXTS) for t in part):
        data = str(text).encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """What makes a tokenizer's output: its class, name, rules and vocabulary."""
    digest = hashlib.blake2b(digest_size=20)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps({
        "class": type(tokenizer).__name__, "name": getattr(tokenizer, "name_or_path", ""),
        "special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "inputs": list(getattr(tokenizer, "model_input_names", [])),
    }, sort_keys=True).encode())
    return digest.hexdigest()


def token_cache_key(tokenizer: Any, texts: Sequence[str], max_length: int | None,
                    head_tokens: int | None) -> str:
    """24 hex digits naming the cache file of these texts under this tokenizer and cut."""
    blob = json.dumps({"texts": texts_digest(texts), "tokenizer": tokenizer_digest(tokenizer),
                       "max_length": max_length, "head_tokens": head_tokens,
                       "version": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


BATCH_TEXTS = 16_384  # texts per Arrow record batch: what the cold path holds in memory


class ArrowEncodings:
    """`Encodings` (kit.models.hf.data) over an Arrow file of record batches, read row by row.

    Each batch holds `BATCH_TEXTS` texts as one `large_list<int32>` column per model input.
    Opening maps the file once to find where each batch's values lie and copies the per-text
    offsets (8 bytes a text); `row(i)` then reads the text's tokens with `os.pread`, a few
    hundred bytes per input. Why not numpy views of the mapped file: a page fault on a mapping
    reads ahead (read_ahead_kb, 8 MB on this machine's disk) into the process's resident set,
    so random rows grew RSS by ~37 MB a training step of 16 rows, 0.7 GB in 50 steps of the
    1M-row bench (bench/bench_data.py); pread's read-ahead stays in the page cache.
    """

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = path
        source = pa.memory_map(str(path), "r")
        base = source.read_buffer(1).address  # the mapping's first byte: file position 0
        reader = pa.ipc.open_file(source)
        # per batch: {input: file position of its int32 values}, offsets (a copy, in memory)
        self.batches: list[tuple[dict[str, int], np.ndarray]] = []
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            where, offsets = {}, np.zeros(1, dtype=np.int64)
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                values = column.values
                where[name] = values.buffers()[1].address - base + 4 * values.offset
                offsets = np.array(column.offsets.to_numpy(zero_copy_only=True))
            self.batches.append((where, offsets))
        sizes = [len(offsets) - 1 for _, offsets in self.batches]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.lengths = (np.concatenate([np.diff(o) for _, o in self.batches])
                        if self.batches else np.zeros(0, dtype=np.int64))
        self.keys = list(self.batches[0][0]) if self.batches else []
        del reader, source  # the mapping goes; rows are read from a plain descriptor
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, i: int) -> dict[str, list[int]]:
        """The i-th text's model inputs."""
        b = int(np.searchsorted(self.starts, i, side="right")) - 1
        where, offsets = self.batches[b]
        j = i - int(self.starts[b])
        start, end = int(offsets[j]), int(offsets[j + 1])
        return {key: np.frombuffer(os.pread(self._fd, 4 * (end - start), pos + 4 * start),
                                   dtype=np.int32).tolist() for key, pos in where.items()}

    def __getstate__(self) -> dict[str, Any]:  # a DataLoader worker (spawn) reopens the file
        return {k: v for k, v in self.__dict__.items() if k != "_fd"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self) -> None:
        fd = self.__dict__.pop("_fd", None)
        if fd is not None:
            os.close(fd)


def write_arrow(path: Path, texts: Sequence[str], encode: Callable[[Sequence[str]], Any]) -> Path:
    """Tokenise `texts` batch by batch with `encode` (texts -> Encodings), each batch written
    to the Arrow file as it is made; the file appears whole (renamed) or not at all."""
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = None
    try:
        with pa.OSFile(str(tmp), "wb") as sink:
            # Streamed from an Arrow TextColumn (never all texts as Python strings); [] once
            # for no texts, so the file still has its schema.
            for part in itertools.chain(text_batches(texts, BATCH_TEXTS), [[]] if not texts
                                        else []):
                enc = encode(part)
                offsets = pa.array(np.asarray(enc.offsets, dtype=np.int64))
                batch = pa.record_batch({
                    key: pa.LargeListArray.from_arrays(
                        offsets, pa.array(np.asarray(values, dtype=np.int32)))
                    for key, values in enc.flat.items()})
                if writer is None:
                    writer = pa.ipc.new_file(sink, batch.schema)
                writer.write_batch(batch)
                _return_freed_heap()
            writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _return_freed_heap() -> None:
    """Hand memory freed by a batch's tokenisation back to the OS (glibc's `malloc_trim`):
    without it the heap of a million-text pass keeps the high-water mark of every batch's
    fragments. A no-op where the C library is not glibc."""
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def cached_encodings(folder: Path, tokenizer: Any, texts: Sequence[str], max_length: int | None,
                     head_tokens: int | None, encode: Callable[[Sequence[str]], Any],
                     ) -> ArrowEncodings:
    """The texts' encodings from the cache file, or tokenised with `encode` into it first.

    Either way they are read from the file row by row: the cold path holds one batch at a time.
    """
    key = token_cache_key(tokenizer, texts, max_length, head_tokens)
    path = Path(folder) / f"tokens-{key}.arrow"
    if path.is_file():
        EVENTS["tokens hit"] += 1
        log.info(f"{len(texts)} tokenised texts from the cache {path.name}.")
    else:
        EVENTS["tokens miss"] += 1
        write_arrow(path, texts, encode)
    return ArrowEncodings(path)
