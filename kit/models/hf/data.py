"""Texts to model inputs: tokenisation, dynamic padding, length-grouped batches, sorted inference.

Long texts are cut at the right, at the left, or in the middle (`head_tail`: the first
`head_tokens` and the last `max_length - head_tokens` tokens, special tokens included, which
Sun et al. 2019 found best for long reviews). Nothing is ever padded to `max_length`: texts are
tokenised once without padding, batches are
padded to their own longest member (`DataCollatorWithPadding`), training batches hold texts of
similar length (transformers' `LengthGroupedSampler`, seeded per epoch so a resumed run sees the
same order), and inference runs over texts sorted by length, with the results put back in input
order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from kit.core.progress import ProgressLine, count_line
from kit.data.arrow_rows import text_batches
from kit.data.lengths import percentile_length
from kit.errors import KitError

if TYPE_CHECKING:
    from kit.models.hf.token_cache import ArrowEncodings

__all__ = [
    "Encodings",
    "EpochSeededLengthGroupedSampler",
    "TokenizedTexts",
    "head_tail_tokens",
    "logits_to_probs",
    "make_collator",
    "model_max_length",
    "predict_probs",
    "set_truncation_side",
    "suggest_max_length",
    "token_lengths",
    "tokenize_texts",
]

_CHUNK = 1024  # texts per tokenizer call: its Python lists of ints are the transient peak

log = logging.getLogger(__name__)


class Encodings:
    """Unpadded token sequences stored flat (one int32 array per key plus offsets).

    A million texts as Python lists of ints would take gigabytes; flat arrays take 4 bytes a
    token. `row(i)` gives one text's dict of lists, as the collator wants.
    """

    def __init__(self, flat: dict[str, np.ndarray], offsets: np.ndarray):
        self.flat = flat
        self.offsets = offsets
        self.lengths = np.diff(offsets)

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, i: int) -> dict[str, list[int]]:
        """The i-th text's model inputs."""
        start, end = self.offsets[i], self.offsets[i + 1]
        return {key: values[start:end].tolist() for key, values in self.flat.items()}


class TokenizedTexts(Dataset):
    """Token ids (unpadded), optional labels and a teacher's probabilities (a distilled student's
    soft targets, `teacher_probs` in each item); items are dicts for the collator."""

    def __init__(self, encodings: Encodings | ArrowEncodings, labels: np.ndarray | None = None,
                 teacher_probs: np.ndarray | None = None):
        self.encodings = encodings
        self.labels = labels
        self.teacher_probs = teacher_probs
        self.lengths = encodings.lengths.tolist()

    def __len__(self) -> int:
        return len(self.encodings)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = self.encodings.row(i)
        if self.labels is not None:
            item["labels"] = self.labels[i].tolist()
        if self.teacher_probs is not None:
            item["teacher_probs"] = self.teacher_probs[i].tolist()
        return item


TRUNCATION_SIDES = ("right", "left", "head_tail")


def set_truncation_side(tokenizer: PreTrainedTokenizerBase, side: str) -> None:
    """Make the tokenizer cut long texts on `side`; head_tail texts the kit cuts itself."""
    if side not in TRUNCATION_SIDES:
        raise KitError(
            f"transformer.truncation_side is {side!r}; use 'right' (keep the start of each "
            "text), 'left' (keep the end) or 'head_tail' (keep both ends)."
        )
    # Tokenizers know only left and right (and save the setting with the model): head_tail
    # texts are tokenised whole and cut by `_encode`, so the tokenizer keeps its default.
    tokenizer.truncation_side = "right" if side == "head_tail" else side


def head_tail_tokens(side: str | None, head_tokens: int | None, max_length: int) -> int | None:
    """Tokens kept from the start of a long text under head_tail truncation; None otherwise.

    Null `head_tokens` means a quarter of `max_length` (the end usually says more: a review's
    verdict, an essay's conclusion).
    """
    if side != "head_tail":
        return None
    head = max(1, max_length // 4) if head_tokens is None else int(head_tokens)
    if not 0 < head < max_length:
        raise KitError(
            f"transformer.head_tokens is {head}; with max_length {max_length} use a value in "
            f"[1, {max_length - 1}] so that both ends of a long text are kept."
        )
    return head


def _head_tail(ids: list[int], head: int, max_length: int) -> list[int]:
    if len(ids) <= max_length:
        return ids
    return ids[:head] + ids[len(ids) - (max_length - head):]


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int | None,
    head_tokens: int | None = None,
) -> Encodings:
    parts: dict[str, list[np.ndarray]] = {}
    lengths: list[np.ndarray] = []
    cut = head_tokens is not None and max_length is not None  # head_tail: tokenise whole, cut
    if cut and not 0 < head_tokens < max_length:
        raise KitError(f"head_tokens is {head_tokens}; use a value in [1, {max_length - 1}] "
                       f"(below max_length {max_length}).")
    for part in text_batches(texts, _CHUNK):  # streamed from Arrow texts, never all as str
        enc = tokenizer(
            part,
            truncation=max_length is not None and not cut,
            max_length=None if cut else max_length,
            padding=False,
            verbose=False,
        )
        if cut:
            enc = {key: [_head_tail(ids, head_tokens, max_length) for ids in values]
                   for key, values in enc.items()}
        lengths.append(np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64))
        for key, values in enc.items():
            parts.setdefault(key, []).append(
                np.fromiter((t for ids in values for t in ids), dtype=np.int32)
            )
    if not parts:  # no texts: keep the keys the model needs
        parts = {name: [np.zeros(0, dtype=np.int32)] for name in tokenizer.model_input_names}
        parts.setdefault("input_ids", [np.zeros(0, dtype=np.int32)])
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths or [np.zeros(0, int)]))])
    return Encodings({k: np.concatenate(v) for k, v in parts.items()}, offsets.astype(np.int64))


def _encode_cached(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                   max_length: int | None, head_tokens: int | None,
                   cache_dir: Path | None) -> Encodings | ArrowEncodings:
    """`_encode`, through the token cache in `cache_dir` when one is given."""
    if cache_dir is None:
        return _encode(tokenizer, texts, max_length, head_tokens)
    from kit.models.hf.token_cache import cached_encodings

    return cached_encodings(cache_dir, tokenizer, texts, max_length, head_tokens,
                            lambda part: _encode(tokenizer, part, max_length, head_tokens))


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    labels: np.ndarray | None = None,
    task: str = "multiclass",
    truncation_side: str | None = None,
    head_tokens: int | None = None,
    cache_dir: Path | None = None,
) -> TokenizedTexts:
    """Tokenise without padding, truncating to `max_length` on `truncation_side`.

    `head_tokens` (or truncation_side "head_tail", which defaults it to max_length/4) keeps the
    first `head_tokens` and the last `max_length - head_tokens` tokens of a long text. Labels
    become int64 class ids (binary, multiclass) or float multi-hot rows (multilabel), which is
    what cross-entropy and BCE expect. With `cache_dir`, the tokens are cached there as an
    Arrow file (kit.models.hf.token_cache) and reused by any later call.
    """
    if truncation_side is not None:
        set_truncation_side(tokenizer, truncation_side)
        head_tokens = head_tail_tokens(truncation_side, head_tokens, max_length)
    encodings = _encode_cached(tokenizer, texts, max_length, head_tokens, cache_dir)
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(texts):
            raise KitError(f"{len(texts)} texts but {len(labels)} labels; they must match.")
        labels = labels.astype(np.float32) if task == "multilabel" else labels.astype(np.int64)
    return TokenizedTexts(encodings, labels)


def make_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Pads each batch to its own longest text (a multiple of 8 on GPU tensor cores is not
    worth it for short texts; left at 1 so CPU batches stay as short as possible)."""
    return DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="pt")


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose shuffle depends only on (seed, epoch).

    The stock sampler draws its permutation from the global torch RNG when an epoch's iterator
    is created (or from one generator that advances across epochs). After a resume, neither is
    where it was in the original run, so the resumed epoch would visit examples in a different
    order: some twice, some never (transformers #38939, #40691). `Trainer` calls `set_epoch`
    before every epoch, also on the dataloader it rebuilds to skip the already-trained batches,
    so deriving the permutation from (seed, epoch) makes a resumed epoch identical.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=list(lengths))
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order `__iter__` yields."""
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def token_lengths(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> np.ndarray:
    """Tokens per text, special tokens included and nothing truncated (for EDA plots)."""
    return _encode(tokenizer, texts, max_length=None).lengths


def model_max_length(tokenizer: PreTrainedTokenizerBase, config: Any = None) -> int:
    """The longest input the model accepts (512 when neither tokenizer nor config says)."""
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    pos = getattr(config, "max_position_embeddings", None) if config is not None else None
    if isinstance(pos, int) and pos > 0:
        limits.append(pos)
    return min(limits) if limits else 512


def suggest_max_length(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    percentile: float = 99.0,
    limit: int | None = None,
) -> int:
    """The `percentile` of token lengths, rounded up to a multiple of 8, at most the model's limit.

    Texts longer than this are truncated; with dynamic padding a higher value only costs time on
    the few long batches.
    """
    if not 0 < percentile <= 100:
        raise KitError(f"percentile is {percentile}; use a value in (0, 100], e.g. 99.")
    cap = limit or model_max_length(tokenizer)
    if len(texts) == 0:
        return min(cap, 128)
    return min(cap, percentile_length(token_lengths(tokenizer, texts), percentile))


def logits_to_probs(logits: np.ndarray | torch.Tensor, task: str) -> np.ndarray:
    """Sigmoid per column (multilabel) or softmax per row (binary K=2, multiclass)."""
    t = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    probs = torch.sigmoid(t) if task == "multilabel" else torch.softmax(t, dim=-1)
    return probs.numpy().astype(np.float64)


@torch.inference_mode()
def predict_probs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    task: str,
    sort_by_length: bool = True,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
    desc: str = "predict",
    head_tokens: int | None = None,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """Class probabilities (n, K) in the order of `texts`.

    `head_tokens`: cut long texts as training did under head_tail truncation (head_tail_tokens).
    `cache_dir`: tokens through the token cache, as in `tokenize_texts`.

    Batches are cut from the texts sorted by token length, so each pads only to its own
    neighbours' length; the rows are put back in input order at the end. (`Trainer.predict`
    would pad batches of random lengths, and with `group_by_length` it also returns rows in the
    sampler's order; hence this short loop.) With `progress`, reports `desc done/n texts` as
    text lines (kit.core.progress), the same way training does: readable in a headless log.
    """
    encodings = _encode_cached(tokenizer, texts, max_length, head_tokens, cache_dir)
    n = len(encodings)
    num_labels = int(getattr(getattr(model, "config", None), "num_labels", 0) or 0)
    if n == 0:
        return np.zeros((0, num_labels), dtype=np.float64)
    lengths = encodings.lengths
    # Stable sort, longest first: an out-of-memory shows up on the first batch, not the last.
    order = np.argsort(-lengths, kind="stable") if sort_by_length else np.arange(n)
    collate = make_collator(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks: list[np.ndarray] = []
    line = ProgressLine(log) if progress else None
    started = time.monotonic()

    def report(done: int, force: bool = False) -> None:
        if line is not None:
            line.update(count_line(desc, done, n, time.monotonic() - started, done, " texts"),
                        force=force)

    report(0, force=True)  # longest batches come first: the early ETA errs long
    try:
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = collate([encodings.row(i) for i in idx])
            batch = {k: v.to(device) for k, v in batch.items()}
            if autocast_dtype is not None and device.type == "cuda":
                with torch.autocast("cuda", dtype=autocast_dtype):
                    logits = model(**batch).logits
            else:
                logits = model(**batch).logits
            chunks.append(logits.float().cpu().numpy())
            report(start + len(idx), force=start + len(idx) == n)
    finally:
        model.train(was_training)
    sorted_logits = np.concatenate(chunks)
    logits = np.empty_like(sorted_logits)
    logits[order] = sorted_logits
    return logits_to_probs(logits, task)
