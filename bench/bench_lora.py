"""Benchmark LoRA vs 4-bit QLoRA training of SmolLM2-135M on CPU: tokens/s, peak memory, estimate.

Each mode runs in its own process (peak RSS is per process), on real CHAMP math problems
(topic labels), batch 8, truncated to `--max-length` tokens, through
kit.models.llm.lora.load_lora_classifier. The kit.models.llm.memory_plan estimate (float32 on
CPU) is printed beside the measured peak RSS; RSS also
counts Python, torch and the libraries (measured before the model loads and shown subtracted),
which the GPU-shaped estimate has no equivalent of.

Then the kit's LoRA training step against plain peft + `Trainer` with the same settings (model,
adapters on every backbone Linear layer, r 8, alpha 16, dropout 0.05, batch 8, max_length, HF
length grouping, Trainer's default optimizer), each run in its own process, interleaved, best of
`--repeats`; model loading and the kit's checkpoint save are not counted. The last line is
`kit / plain-peft = 0.xx`.

    .venv/bin/python bench/bench_lora.py [--steps 3] [--batch 8] [--max-length 128] [--out F.json]
        [--ratio-steps 5] [--repeats 2] [--skip-memory]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {"lora": "none", "qlora": "4bit"}
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def champ_topics(n: int) -> tuple[list[str], list[int], list[str]]:
    """The first n CHAMP problems and their category ids (from the champ-dataset package)."""
    spec = importlib.util.find_spec("champ_dataset")
    if spec is None:
        sys.exit("bench needs `pip install --no-deps champ-dataset==1.0.0`")
    data = Path(spec.submodule_search_locations[0]) / "dataset_files" / "v0.json"
    problems = list(json.loads(data.read_text())["problems"].values())
    names = sorted({p["category"] for p in problems})
    texts = [p["_text"] for p in problems[:n]]
    return texts, [names.index(p["category"]) for p in problems[:n]], names


def smollm2_folder() -> str:
    """SmolLM2 as a safetensors folder (kit.core.model_source caches the packaged GGUF once)."""
    from kit.core.model_source import resolve_model

    return resolve_model("smollm2-135m")


def run_one(mode: str, steps: int, batch: int, max_length: int) -> dict:
    """Load, train `steps` timed steps after one warm-up step, and measure (in this process)."""
    import torch

    from kit.config.params import LoraParams, TransformerParams
    from kit.models.hardware import detect_hardware
    from kit.models.llm.lora import load_lora_classifier
    from kit.models.llm.memory_plan import measured_peak_gb

    torch.manual_seed(0)
    texts, labels, names = champ_topics(batch * (steps + 1))
    cfg = TransformerParams(
        model=smollm2_folder(), max_length=max_length, batch_size=batch, optimizer="adamw_torch",
        lora=LoraParams(enabled=True, r=8, alpha=16, dropout=0.05, quantization=MODES[mode]),
    )
    profile = detect_hardware()
    folder = cfg.model
    tok_probe = __import__("transformers").AutoTokenizer.from_pretrained(folder)  # libs loaded
    del tok_probe
    baseline = measured_peak_gb("cpu")  # Python + torch + transformers + peft, before the model
    report: dict = {}
    t0 = time.perf_counter()
    model, tok = load_lora_classifier(cfg, len(names), "multiclass", names, profile, report)
    load_s = time.perf_counter() - t0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    tokens, seconds, losses = 0, 0.0, []
    for i in range(steps + 1):
        chunk = slice(i * batch, (i + 1) * batch)
        enc = tok(texts[chunk], truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt")
        t = time.perf_counter()
        loss = model(**enc, labels=torch.tensor(labels[chunk])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i:  # step 0 warms up allocators and kernels
            seconds += time.perf_counter() - t
            tokens += int(enc["attention_mask"].sum())
        losses.append(round(loss.item(), 4))
    estimate_cfg = dataclasses.replace(cfg, gradient_checkpointing=MODES[mode] != "none")
    return {
        "mode": mode,
        "quantization": MODES[mode],
        "gradient_checkpointing": estimate_cfg.gradient_checkpointing,
        "steps": steps,
        "batch": batch,
        "max_length": max_length,
        "load_seconds": round(load_s, 1),
        "seconds_per_step": round(seconds / steps, 2),
        "tokens_per_second": round(tokens / seconds, 1),
        "peak_rss_gb": measured_peak_gb("cpu"),
        "baseline_rss_gb": baseline,
        "estimate_gb": report.get("memory_estimate_gb"),
        "estimate_breakdown_gb": (report.get("memory_estimate") or {}).get("breakdown_gb"),
        "trainable_params": report["trainable_params"],
        "losses": losses,
        "torch_threads": torch.get_num_threads(),
    }


def kit_lora_seconds(steps: int, batch: int, max_length: int, out: Path) -> float:
    """Seconds of the kit's LoRA training steps (train_transformer; its checkpoint saves left
    out)."""
    from kit.config.params import LoraParams, TransformerParams
    from kit.models.hf.train import train_transformer

    texts, labels, names = champ_topics(10**6)
    cfg = TransformerParams(
        model=smollm2_folder(), max_length=max_length, batch_size=batch, max_steps=steps,
        lr=1e-4, save_steps=10**6, eval_steps=10**6, class_weights="sqrt",
        lora=LoraParams(enabled=True, r=8, alpha=16, dropout=0.05, target_modules=LLAMA_LINEAR),
    )
    import numpy as np

    result = train_transformer(texts, np.array(labels), None, None, None, task="multiclass",
                               label_names=names, cfg=cfg, seed=0, work_dir=out)
    saves = result.extra.get("checkpoint_saves", [])
    return result.train_seconds - sum(s["seconds"] for s in saves)


def plain_peft_seconds(steps: int, batch: int, max_length: int, out: Path) -> float:
    """Seconds of `Trainer.train()` on a plain peft LoRA model, HF length grouping."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(0)
    texts, labels, names = champ_topics(10**6)
    folder = smollm2_folder()
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=len(names), dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16,
                                             lora_dropout=0.05, target_modules=LLAMA_LINEAR))
    enc = tok(texts, truncation=True, max_length=max_length)
    rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "labels": labels[i]} for i in range(len(texts))]
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
        learning_rate=1e-4, warmup_steps=0.06, weight_decay=0.01, save_strategy="no",
        logging_steps=10**6, report_to="none", use_cpu=True, seed=0, dataloader_num_workers=0,
        disable_tqdm=True, train_sampling_strategy="group_by_length",
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      data_collator=DataCollatorWithPadding(tok), processing_class=tok)
    t = time.perf_counter()
    trainer.train()
    return time.perf_counter() - t


def ratio(args: argparse.Namespace) -> float:
    """Best-of-`repeats` kit and plain-peft seconds, interleaved, each run in a fresh process."""
    best = {"kit": float("inf"), "plain": float("inf")}
    for r in range(args.repeats):
        for which in ("kit", "plain") if r % 2 == 0 else ("plain", "kit"):
            cmd = [sys.executable, __file__, "--one-ratio", which, "--ratio-steps",
                   str(args.ratio_steps), "--batch", str(args.batch), "--max-length",
                   str(args.max_length)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
            if done.returncode:
                sys.exit(f"{which} failed:\n{done.stderr[-3000:]}")
            best[which] = min(best[which], float(done.stdout.strip().splitlines()[-1]))
        print(f"repeat {r}: kit {best['kit'] / args.ratio_steps:.2f} s/step, plain peft "
              f"{best['plain'] / args.ratio_steps:.2f} s/step so far", flush=True)
    print(f"\nLoRA training step, SmolLM2-135M on CPU, CHAMP topics, batch {args.batch}, "
          f"max_length {args.max_length}, {args.ratio_steps} steps, best of {args.repeats}")
    for which, label in (("kit", "kit: train_transformer, lora.enabled"),
                         ("plain", "plain peft + Trainer, HF length grouping")):
        print(f"{label:44s} {best[which] / args.ratio_steps:6.2f} s/step "
              f"{args.ratio_steps * args.batch / best[which]:6.2f} samples/s")
    return best["plain"] / best["kit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per memory mode")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--ratio-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true", help="only the kit / peft ratio")
    parser.add_argument("--one", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--one-ratio", choices=["kit", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.batch, args.max_length)))
        return
    if args.one_ratio:
        import tempfile

        run = kit_lora_seconds if args.one_ratio == "kit" else plain_peft_seconds
        with tempfile.TemporaryDirectory() as tmp:
            print(run(args.ratio_steps, args.batch, args.max_length, Path(tmp)))
        return
    smollm2_folder()  # convert once, outside the timed children
    if not args.skip_memory:
        memory_modes(args)
    print(f"kit / plain-peft = {ratio(args):.2f}")


def memory_modes(args: argparse.Namespace) -> None:
    """LoRA and QLoRA, each in its own process: s/step, tokens/s, peak RSS against the plan."""
    results = []
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--one", mode, "--steps", str(args.steps), "--batch",
               str(args.batch), "--max-length", str(args.max_length)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        if done.returncode:
            sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'mode':6} {'s/step':>7} {'tok/s':>7} {'peak RSS':>9} {'- libs':>7} {'estimate':>9}"
          "  (GB)  losses")
    for r in results:
        print(f"{r['mode']:6} {r['seconds_per_step']:7.2f} {r['tokens_per_second']:7.1f} "
              f"{r['peak_rss_gb']:9.2f} {r['peak_rss_gb'] - r['baseline_rss_gb']:7.2f} "
              f"{r['estimate_gb'] or float('nan'):9.2f}        {r['losses']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
