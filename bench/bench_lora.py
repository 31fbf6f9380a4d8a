"""Benchmark LoRA vs 4-bit QLoRA training of SmolLM2-135M on CPU: tokens/s, peak memory, estimate.

Each mode runs in its own process (peak RSS is per process), on real CHAMP math problems
(topic labels), batch 8, truncated to `--max-length` tokens, through
kit.models.llm.lora.load_lora_classifier. The kit.models.llm.memory_plan estimate (float32 on
CPU) is printed beside the measured peak RSS; RSS also
counts Python, torch and the libraries (measured before the model loads and shown subtracted),
which the GPU-shaped estimate has no equivalent of.

    .venv/bin/python bench/bench_lora.py [--steps 4] [--batch 8] [--max-length 128] [--out F.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {"lora": "none", "qlora": "4bit"}


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
    """SmolLM2 as a safetensors folder (kit.models.source caches the packaged GGUF once)."""
    from kit.models.source import resolve_model

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.batch, args.max_length)))
        return
    smollm2_folder()  # convert once, outside the timed children
    results = []
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--one", mode, "--steps", str(args.steps), "--batch",
               str(args.batch), "--max-length", str(args.max_length)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
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
