"""Benchmark the bounded-memory data path: one streamed pass, token cache, cold vs cached start.

  1. arXiv-shaped JSON lines of each size (GB, `--sizes`; tests/helpers/arxiv_shaped.py): one
     pass that parses, maps labels (params/arxiv-domains.yaml) and draws a stratified sample of
     `--sample` rows (equal per class, seeded reservoir). MB/s, records/s and peak RSS, next to
     `wc -l` on the same file (the floor: reading the bytes and nothing else).
  2. Tokenisation of the largest size's sample texts with `--model`'s tokenizer: cold
     (tokenise + write the Arrow cache) vs cached (a new process maps the cache).
  3. An answer-correctness-shaped CSV of `--csv-rows` rows (question, answer, solution,
     is_correct): load through the streamed path, tokenise, `--steps` training steps of
     `--model`; cold (no caches) vs cached rerun. Peak RSS; time until training starts.
     Before it, the rows and texts of that CSV into Arrow through the kit (pyarrow, streamed
     reads) and through Hugging Face `datasets` when installed: peak RSS of each.

Every measurement runs in its own process, so each peak RSS is that step's alone.

    .venv/bin/python bench/bench_data.py --sizes 0.5 2
    .venv/bin/python bench/bench_data.py --sizes 0.5 --csv-rows 200000   # quicker

Measured (2 cores shared with six other sessions, load average 4-10; peak RSS is not slowed by
a busy CPU, timings are): the 1M-row CSV with `--model words`, peak RSS 1,284 MB cold and
1,178 MB cached (was 4.2-4.5 GB with rows and texts as Python lists); the cached rerun started
training at 1.7 % of the cold time.
Rerun 2026-12-05 on an idle machine (load 0.2-1.0): peak RSS 1,634 MB cold and 1,583 MB cached
(710 MB after the load, 773 MB after tokenising; the rest in the 50 training steps): the token
cache's rows were numpy views of a memory-mapped file, and each page fault read ahead up to
read_ahead_kb (8 MB on this disk) into the process's resident set, ~37 MB a step of 16 random
rows. Rows into Arrow 359 MB against `datasets`' 1,348 MB.
Since the token cache reads rows with pread (kit.models.hf.token_cache.ArrowEncodings), rerun
2026-12-05 at nice 19 beside a test suite and a training (load 2.8-3.2: timings inflated, RSS
not): peak RSS **888 MB cold, 833 MB cached** (783 / 665 MB after the load; at the end 647 + 208
and 602 + 208 MB anonymous + file-backed); the cached rerun started training at 1.4 % of the
cold time.
MiniLM's WordPiece (`--model tiny`) tokenised at ~4 ms a
text on that machine, an hour for the cold run; its token arrays are the same size.

Files are generated once under `--workdir` and reused. Timings swing with the machine's load;
run it on an otherwise idle machine for figures to publish.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "helpers"))

from kit.core.envinfo import peak_rss_mb  # noqa: E402  (the run folders' own peak RSS figure)

COLUMNS = ["id", "title", "abstract", "categories"]
DOMAINS = 7  # classes of params/arxiv-domains.yaml
WORDS = ("the a of we so let then x y n sum prime integer equation solve root value find "
         "therefore hence answer step check total number each term since divide multiply both "
         "sides gives equals")


def rss_parts_mb() -> dict[str, int]:
    """This process's resident memory now, split (Linux /proc): anonymous (the heap, what the
    process holds) and file-backed (pages of memory-mapped files such as the Arrow caches, which
    the kernel may drop and reread). The peak RSS counts both."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    parts = {k: int(v.split()[0]) // 1024 for k, v in (line.split(":", 1) for line in lines)
             if k in ("RssAnon", "RssFile")}
    return {"anon_mb": parts.get("RssAnon", -1), "file_mb": parts.get("RssFile", -1)}


def arxiv_file(workdir: Path, gb: float) -> Path:
    from arxiv_shaped import write_arxiv_jsonl

    path = workdir / f"arxiv-{gb:g}GB.jsonl"
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        write_arxiv_jsonl(tmp, target_bytes=int(gb * 1e9), seed=0)
        tmp.rename(path)
    return path


def correctness_folder(workdir: Path, rows: int) -> Path:
    """train.csv (id, question, answer, solution, is_correct), test.csv, sample_submission.csv."""
    folder = workdir / f"correctness-{rows}"
    if (folder / "sample_submission.csv").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = WORDS.split()

    def text(n: int) -> str:
        return " ".join(rng.choices(words, k=n))

    def row(i: int) -> list:
        ans = str(rng.randint(1, 999))
        steps = max(20, min(900, int(math.exp(rng.gauss(4.9, 0.5)))))  # solution words
        return [i, "Find " + text(rng.randint(15, 60)) + "?", ans,
                text(steps) + f" The final answer is {ans}.", rng.random() < 0.4]

    for name, n, labelled in (("train.csv", rows, True), ("test.csv", 1000, False)):
        with open(folder / name, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["id", "question", "answer", "solution"]
                         + (["is_correct"] if labelled else []))
            for i in range(n):
                r = row(i if labelled else 10**8 + i)
                out.writerow(r if labelled else r[:4])
    with open(folder / "sample_submission.csv", "w") as f:
        f.write("id,is_correct\n" + "".join(f"{10**8 + i},False\n" for i in range(1000)))
    return folder


# --- the measured steps, each in its own process ---------------------------------------------


def child_pass(path: Path, sample: int, texts_out: Path | None) -> dict:
    import yaml

    from kit.config.schema import CompetitionParams
    from kit.data.cache import read_streamed
    from kit.data.labelmap import LabelKeys

    # the recipe's competition section only: load_params would check the transformer section,
    # which imports torch (600 MB of RSS that has nothing to do with the data)
    recipe = yaml.safe_load((REPO / "params" / "arxiv-domains.yaml").read_text())
    keys = LabelKeys(CompetitionParams(**recipe["competition"]))
    baseline = peak_rss_mb()
    started = time.perf_counter()
    table = read_streamed(path, COLUMNS, None, label_column="categories", key_of=keys,
                          per_class=math.ceil(sample / DOMAINS), seed=0)
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    out = {"file_mb": round(size / 1e6), "records": table.info["records"],
           "seconds": round(seconds, 2), "mb_per_s": round(size / 1e6 / seconds, 1),
           "records_per_s": round(table.info["records"] / seconds),
           "kept": len(table.frame), "peak_rss_mb": round(peak_rss_mb()),
           "baseline_rss_mb": round(baseline)}
    if texts_out is not None:
        frame = table.frame
        texts = (frame["title"].fillna("") + "\n\n" + frame["abstract"].fillna("")).tolist()
        import pandas as pd

        pd.DataFrame({"text": texts}).to_parquet(texts_out)
    return out


def model_folder(model: str) -> str:
    """`tiny`: MiniLM's tokenizer (real tokenisation cost) on a 2-layer, 64-wide BERT built from
    a config (training steps cost little); else a kit alias (minilm: the kit's smallest real
    encoder) or a local folder."""
    from kit.core.model_source import resolve_model

    if model == "words":
        return words_model_folder()
    if model != "tiny":
        return str(resolve_model(model))
    folder = Path("/tmp/compkit-bench-tiny-minilm-vocab")
    if not (folder / "config.json").is_file():
        from transformers import AutoTokenizer, BertConfig, BertModel

        tok = AutoTokenizer.from_pretrained(resolve_model("minilm"))
        tok.save_pretrained(folder)
        config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=128)
        BertModel(config).save_pretrained(folder)
    return str(folder)


def words_model_folder() -> str:
    """A word-level tokenizer over the generated texts' words (trained here) on the same toy
    BERT: the data path's memory at the full row count where WordPiece would take an hour."""
    folder = Path("/tmp/compkit-bench-words")
    if (folder / "config.json").is_file():
        return str(folder)
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [WORDS, "question answer solution find the final answer is ? : .",
              " ".join(str(i) for i in range(1000))]
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", model_max_length=512)
    fast.save_pretrained(folder)
    config = BertConfig(vocab_size=len(fast), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128)
    BertModel(config).save_pretrained(folder)
    return str(folder)


def tokenizer_of(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_folder(model))


def child_tokens(texts_file: Path, model: str, cache: Path, max_length: int) -> dict:
    import pandas as pd

    from kit.data.cache import EVENTS
    from kit.models.hf.data import tokenize_texts

    texts = pd.read_parquet(texts_file)["text"].tolist()
    tok = tokenizer_of(model)
    max_length = min(max_length, tok.model_max_length)
    started = time.perf_counter()
    ds = tokenize_texts(tok, texts, max_length, cache_dir=cache)
    _ = ds[len(ds) - 1]  # touch the data
    return {"texts": len(texts), "seconds": round(time.perf_counter() - started, 2),
            "hit": EVENTS["tokens hit"] > 0, "peak_rss_mb": round(peak_rss_mb())}


def child_train(folder: Path, model: str, cache: Path, steps: int, max_length: int,
                batch_size: int) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification

    from kit.config.params import params_from_dict
    from kit.data.cache import EVENTS
    from kit.data.competition import load_competition
    from kit.models.hf.data import make_collator, tokenize_texts

    torch.set_num_threads(1)
    params = params_from_dict({"competition": {
        "slug": "correctness", "data_dir": str(folder), "answer_key_file": None,
        "text_columns": ["question", "answer", "solution"],
        "text_template": "Question: {question}\nAnswer: {answer}\nSolution: {solution}",
        "label_column": "is_correct", "task": "binary", "metric": "accuracy",
        "cache": "on", "cache_dir": str(cache)}})
    started = time.perf_counter()
    comp = load_competition(params, REPO)
    loaded = time.perf_counter() - started
    rss_loaded = peak_rss_mb()
    tok = tokenizer_of(model)
    max_length = min(max_length, tok.model_max_length)  # the tiny model has 128 positions
    ds = tokenize_texts(tok, comp.train_texts, max_length, comp.y, "binary",
                        cache_dir=cache / "tokens")
    tokenized = time.perf_counter() - started
    rss_data = peak_rss_mb()
    net = AutoModelForSequenceClassification.from_pretrained(model_folder(model), num_labels=2)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-5)
    collate = make_collator(tok)
    rng = np.random.default_rng(0)
    net.train()
    train_start = time.perf_counter() - started
    for _ in range(steps):
        batch = collate([ds[int(i)] for i in rng.integers(0, len(ds), batch_size)])
        loss = net(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    total = time.perf_counter() - started
    return {"rows": len(comp.train), "load_s": round(loaded, 1),
            "tokenized_at_s": round(tokenized, 1), "training_starts_at_s": round(train_start, 1),
            "steps_s": round(total - train_start, 1), "total_s": round(total, 1),
            "cache": dict(EVENTS), "rss_after_load_mb": round(rss_loaded),
            "rss_after_tokens_mb": round(rss_data), "peak_rss_mb": round(peak_rss_mb()),
            "rss_end": rss_parts_mb()}


CSV_COLUMNS = ["id", "question", "answer", "solution", "is_correct"]
TEMPLATE = "Question: {question}\nAnswer: {answer}\nSolution: {solution}"


def child_rows(folder: Path, mode: str, cache: Path) -> dict:
    """Rows of train.csv into Arrow, texts rendered into Arrow, every text read once: the kit
    (pyarrow, streamed reads) or Hugging Face `datasets` (mapped table, batched `map` with a
    cache file, `iter`). Peak RSS of each; neither imports torch."""
    from kit.config.schema import CompetitionParams

    comp = CompetitionParams(slug="correctness", text_columns=["question", "answer", "solution"],
                             text_template=TEMPLATE, label_column="is_correct", task="binary")
    path = folder / "train.csv"
    started = time.perf_counter()
    if mode == "kit":
        from kit.data.cache import read_streamed
        from kit.data.texts import render_rows

        texts, _ = render_rows(read_streamed(path, CSV_COLUMNS, cache).rows, comp, str(path))
        chars = sum(len(t) for t in texts)
    else:
        from datasets import Dataset, Features, Value
        from datasets.arrow_writer import ArrowWriter

        from kit.data.stream import StreamStats, iter_chunks
        from kit.data.texts import _render

        rows_file = cache / "datasets-rows.arrow"
        writer = ArrowWriter(features=Features({c: Value("string") for c in CSV_COLUMNS}),
                             path=str(rows_file))
        for chunk in iter_chunks(path, CSV_COLUMNS, StreamStats()):
            writer.write_batch({c: [r[j] for r in chunk] for j, c in enumerate(CSV_COLUMNS)})
        writer.finalize()
        writer.close()
        names = comp.text_columns
        rendered = Dataset.from_file(str(rows_file)).map(
            lambda b: {"text": _render([b[c] for c in names], names, TEMPLATE)}, batched=True,
            batch_size=10_000, remove_columns=CSV_COLUMNS, new_fingerprint="bench",
            cache_file_name=str(cache / "datasets-texts.arrow"))
        chars = sum(len(t) for b in rendered.iter(batch_size=10_000) for t in b["text"])
    return {"chars": chars, "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mb": round(peak_rss_mb())}


def run_child(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child {args[0]} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wc_seconds(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["wc", "-l", str(path)], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.5, 2.0], help="GB of JSON lines")
    ap.add_argument("--sample", type=int, default=200_000)
    ap.add_argument("--csv-rows", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--model", default="tiny",
                    help="tiny (MiniLM's tokenizer on a toy BERT), words (a word-level tokenizer "
                    "on it: fast), minilm, or a local model folder")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/compkit-bench-data"))
    ap.add_argument("--skip", nargs="*", default=[], choices=["pass", "tokens", "rows", "train"])
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "rows":
            out = child_rows(Path(rest[0]), rest[1], Path(rest[2]))
        elif kind == "pass":
            out = child_pass(Path(rest[0]), int(rest[1]), Path(rest[2]) if rest[2:] else None)
        elif kind == "tokens":
            out = child_tokens(Path(rest[0]), rest[1], Path(rest[2]), int(rest[3]))
        else:
            out = child_train(Path(rest[0]), rest[1], Path(rest[2]), int(rest[3]), int(rest[4]),
                              int(rest[5]))
        sys.stdout.write(json.dumps(out) + "\n")
        return

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    print(f"# bench_data: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"python {sys.version.split()[0]}, workdir {work}")
    texts = work / "sample-texts.parquet"
    if "pass" not in args.skip:
        print("\n## One pass: parse, map labels, stratified sample "
              f"({args.sample} rows, {math.ceil(args.sample / DOMAINS)} per class at most)")
        print(f"{'file':>9} {'records':>9} {'wc -l s':>8} {'wc MB/s':>8} {'pass s':>7} "
              f"{'MB/s':>6} {'records/s':>9} {'kept':>7} {'peak RSS MB':>11} {'(imports)':>9}")
        for i, gb in enumerate(args.sizes):
            path = arxiv_file(work, gb)
            wc = wc_seconds(path)
            last = i == len(args.sizes) - 1  # the largest sample feeds the tokenisation figures
            r = run_child("pass", str(path), str(args.sample), *([str(texts)] if last else []))
            print(f"{r['file_mb']:>7}MB {r['records']:>9} {wc:>8.2f} "
                  f"{r['file_mb'] / wc:>8.0f} {r['seconds']:>7.1f} {r['mb_per_s']:>6.1f} "
                  f"{r['records_per_s']:>9} {r['kept']:>7} {r['peak_rss_mb']:>11} "
                  f"{r['baseline_rss_mb']:>9}", flush=True)
    if "tokens" not in args.skip and texts.is_file():
        cache = work / "token-cache"
        shutil.rmtree(cache, ignore_errors=True)
        cold = run_child("tokens", str(texts), args.model, str(cache), str(args.max_length))
        warm = run_child("tokens", str(texts), args.model, str(cache), str(args.max_length))
        print(f"\n## Tokenise {cold['texts']} texts ({args.model}, max_length {args.max_length})")
        print(f"cold   {cold['seconds']:>7.1f} s  peak RSS {cold['peak_rss_mb']} MB")
        print(f"cached {warm['seconds']:>7.1f} s  peak RSS {warm['peak_rss_mb']} MB  "
              f"({100 * warm['seconds'] / cold['seconds']:.1f} % of cold; hit={warm['hit']})")
    if "rows" not in args.skip:
        import importlib.util

        folder = correctness_folder(work, args.csv_rows)
        print(f"\n## {args.csv_rows} rows into Arrow, texts rendered, every text read once")
        for mode in ("kit", "datasets"):
            if mode == "datasets" and importlib.util.find_spec("datasets") is None:
                print("datasets   (not installed: pip install datasets to compare)")
                continue
            cache = work / f"rows-{mode}-{args.csv_rows}"
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(parents=True)
            r = run_child("rows", str(folder), mode, str(cache))
            name = "kit (pyarrow, streamed reads)" if mode == "kit" else "datasets (map, iter)"
            print(f"{name:<30} peak RSS {r['peak_rss_mb']:>6} MB  ({r['chars']} chars)",
                  flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    if "train" not in args.skip:
        folder = correctness_folder(work, args.csv_rows)
        cache = work / f"train-cache-{args.csv_rows}"
        shutil.rmtree(cache, ignore_errors=True)
        print(f"\n## {args.csv_rows}-row answer-correctness CSV "
              f"({(folder / 'train.csv').stat().st_size / 1e6:.0f} MB): load, tokenise, "
              f"{args.steps} steps of {args.model}")
        print(f"{'run':>7} {'load s':>7} {'tokenised at s':>14} {'training at s':>13} "
              f"{'steps s':>8} {'RSS loaded':>10} {'RSS tokens':>10} {'peak RSS MB':>11} "
              f"{'end: anon + file-backed MB':>26}")
        runs = {}
        for name in ("cold", "cached"):
            r = runs[name] = run_child("train", str(folder), args.model, str(cache),
                                       str(args.steps), str(args.max_length),
                                       str(args.batch_size))
            end = r["rss_end"]
            print(f"{name:>7} {r['load_s']:>7.1f} {r['tokenized_at_s']:>14.1f} "
                  f"{r['training_starts_at_s']:>13.1f} {r['steps_s']:>8.1f} "
                  f"{r['rss_after_load_mb']:>10} {r['rss_after_tokens_mb']:>10} "
                  f"{r['peak_rss_mb']:>11} {end.get('anon_mb', '?'):>13} + "
                  f"{end.get('file_mb', '?'):<10}", flush=True)
        share = runs["cached"]["training_starts_at_s"] / runs["cold"]["training_starts_at_s"]
        print(f"cached rerun starts training at {100 * share:.1f} % of the cold time "
              "(target < 10 %)")
    print(f"\n# load average at the end {os.getloadavg()[0]:.1f} (figures are only comparable "
          "on an otherwise idle machine)")


if __name__ == "__main__":
    main()
