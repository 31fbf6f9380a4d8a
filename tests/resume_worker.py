"""Test helper: a tiny BERT + tokenizer built on the spot, a toy corpus, and a training worker.

Run as a script (`python tests/resume_worker.py SPEC.json`) it trains with `train_transformer`
in its own process, so a test can SIGKILL it at any moment and run it again to resume:
- every collated batch's example ids are appended to `trace` (one JSON line per batch), which
  lets the parent kill at a random step and compare data order across runs;
- `kill_in_save_at_step` makes the process SIGKILL itself in the middle of writing that step's
  checkpoint (after the weights and optimizer, before the RNG and trainer state).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
from helpers.kill import stop_here  # tests/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORDS = {
    0: ["apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "pear", "plum"],
    1: ["car", "bus", "train", "plane", "boat", "bike", "truck", "tram", "ship", "taxi"],
    2: ["red", "blue", "green", "black", "white", "pink", "brown", "gray", "gold", "cyan"],
}
FILLER = ["the", "a", "of", "and", "to", "in", "is", "it", "on", "at", "by", "for", "with",
          "from", "this", "that", "very", "some", "more"]


def make_corpus(n: int, seed: int, num_classes: int = 3, multilabel: bool = False):
    """Unique short texts of varied length whose class shows in a few topic words.

    Returns (texts, labels): labels are class ids, or multi-hot rows when `multilabel`.
    """
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[Any] = []
    seen: set[str] = set()
    while len(texts) < n:
        if multilabel:
            hot = [int(rng.random() < 0.4) for _ in range(num_classes)]
            classes = [k for k in range(num_classes) if hot[k]] or [rng.randrange(num_classes)]
            hot = [int(k in classes) for k in range(num_classes)]
        else:
            classes = [rng.randrange(num_classes)]
        length = rng.choice([3, 4, 5, 6, 8, 10, 14, 20])
        words = [rng.choice(FILLER) for _ in range(length)]
        for k in classes:  # topic words make up about half of each text
            for _ in range(max(1, length // (2 * len(classes)))):
                words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS[k]))
        text = " ".join(words)
        if text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(hot if multilabel else classes[0])
    return texts, np.array(labels)


def build_tiny_model(folder: Path) -> Path:
    """A 2-layer BERT (hidden 32) and a WordPiece tokenizer built on the toy vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # WordPiece's trainer breaks ties between merges in hash order, which changes from process to
    # process (so would the trained model); the vocabulary is learned by counting the corpus'
    # words instead: every word a token, plus its letters as pieces for unseen words.
    words = sorted({w for group in [*WORDS.values(), FILLER] for w in group})
    letters = sorted({c for w in words for c in w})
    vocab = specials + words + letters + [f"##{c}" for c in letters]
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)},
                                     unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=64,
    )
    fast.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def install_trace(trace_path: str | os.PathLike, id_of: dict[tuple[int, ...], str],
                  stop_at_train_batch: int | None = None):
    """Record the example ids of every collated batch (one JSON line each, flushed at once).

    `stop_at_train_batch`: the process stops itself (SIGSTOP) right after collating that
    training batch, for the parent to SIGKILL it there (tests/helpers/kill.py).
    """
    from transformers import DataCollatorWithPadding

    original = DataCollatorWithPadding.__call__
    handle = open(trace_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    train_seen = 0

    def traced(self, features):
        nonlocal train_seen
        ids = [id_of.get(tuple(f["input_ids"]), "?") for f in features]
        handle.write(json.dumps(ids) + "\n")
        if ids and all(i.startswith("train:") for i in ids):
            train_seen += 1
            if train_seen == stop_at_train_batch:
                handle.flush()
                stop_here()
        return original(self, features)

    DataCollatorWithPadding.__call__ = traced
    return lambda: setattr(DataCollatorWithPadding, "__call__", original)


def install_kill_in_save(step: int) -> None:
    """SIGKILL this process while it writes the checkpoint of `step` (between two files)."""
    from transformers import Trainer

    original = Trainer._save_rng_state

    def dying(self, output_dir):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, output_dir)

    Trainer._save_rng_state = dying


def toy_task(n_train: int = 96, n_val: int = 30, n_test: int = 20, multilabel: bool = False):
    """Train/val/test splits of the toy corpus, and a map token ids -> "split:index"."""
    texts, labels = make_corpus(n_train + n_val + n_test, seed=1, multilabel=multilabel)
    splits = {
        "train": (texts[:n_train], labels[:n_train]),
        "val": (texts[n_train : n_train + n_val], labels[n_train : n_train + n_val]),
        "test": (texts[n_train + n_val :], labels[n_train + n_val :]),
    }
    return splits


def id_map(tokenizer, splits, max_length: int) -> dict[tuple[int, ...], str]:
    out = {}
    for name, (texts, _) in splits.items():
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        for i, ids in enumerate(enc["input_ids"]):
            out[tuple(ids)] = f"{name}:{i}"
    if len(out) != sum(len(t) for t, _ in splits.values()):
        raise RuntimeError("toy texts do not tokenise uniquely; the trace would be ambiguous")
    return out


def run(spec: dict[str, Any]):
    """Train as `spec` says; returns the TransformerResult."""
    import torch
    from transformers import AutoTokenizer

    from kit.config.params import TransformerParams
    from kit.models.hf.train import train_transformer

    torch.set_num_threads(1)
    multilabel = spec.get("task") == "multilabel"
    splits = toy_task(multilabel=multilabel)
    cfg = TransformerParams(**spec["cfg"])
    if spec.get("trace"):
        tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        install_trace(spec["trace"], id_map(tokenizer, splits, cfg.max_length or 64),
                      spec.get("stop_at_train_batch"))
    if spec.get("kill_in_save_at_step"):
        install_kill_in_save(int(spec["kill_in_save_at_step"]))
    (tr_x, tr_y), (va_x, va_y), (te_x, _) = splits["train"], splits["val"], splits["test"]
    names = ["fruit", "vehicle", "colour"]
    return train_transformer(
        tr_x, tr_y, va_x, va_y, te_x, task=spec.get("task", "multiclass"), label_names=names,
        cfg=cfg, seed=spec.get("seed", 7), work_dir=Path(spec["work_dir"]),
        metric=spec.get("metric", "f1_macro"),
    )


def main() -> None:
    from kit.core.logs import show_logs

    show_logs()  # the kit's messages ("resumed from step N of M") on stdout, as in a notebook
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = run(spec)
    out = {k: v for k, v in dataclasses.asdict(result).items()
           if k not in ("val_probs", "test_probs")}
    np.savez(spec["out"] + ".npz", val_probs=result.val_probs, test_probs=result.test_probs)
    Path(spec["out"] + ".json").write_text(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
