"""Tiny stand-ins for the shipped recipes: a model of the same family, data in the same files.

`REAL_MODELS` maps every `transformer.model` a shipped params file names (hub id or packaged
alias) to the `config.model_type` of the real model and the config class of its family. A new
recipe with a new model must add an entry (tests/test_recipes_tiny.py fails until it does).
`build_tiny_model` builds that family at toy size (hidden 32-64, 2 layers, a vocabulary of a few
hundred tokens built on the spot), randomly initialised, saved like a downloaded checkpoint.
`SYNTHETIC` writes a few dozen rows in a non-demo competition's real layout (file names, formats,
columns, label shapes); the demo competitions build themselves offline (kit.data.demos).
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    BertModel,
    BertTokenizer,
    BitsAndBytesConfig,
    DebertaV2Config,
    DistilBertConfig,
    DistilBertModel,
    DistilBertTokenizer,
    Gemma2Config,
    LlamaConfig,
    ModernBertConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
)


@dataclass(frozen=True)
class Family:
    """The real model's `config.model_type` and the config class its tiny twin is built from."""

    model_type: str
    config: type[PretrainedConfig]
    prequantized_4bit: bool = False  # the hub checkpoint itself holds bitsandbytes 4-bit weights


REAL_MODELS: dict[str, Family] = {
    "microsoft/Phi-4-mini-reasoning": Family("phi3", Phi3Config),  # fused qkv_proj/gate_up_proj
    "unsloth/Meta-Llama-3.1-8B-bnb-4bit": Family("llama", LlamaConfig, prequantized_4bit=True),
    "allenai/scibert_scivocab_uncased": Family("bert", BertConfig),
    "distilbert-base-uncased": Family("distilbert", DistilBertConfig),
    "minilm": Family("bert", BertConfig),  # all-MiniLM-L6-v2 (packaged)
    "smollm2-135m": Family("llama", LlamaConfig),  # SmolLM2-135M-Instruct (packaged GGUF)
    "microsoft/deberta-v3-base": Family("deberta-v2", DebertaV2Config),  # v3 = v2 architecture
    "microsoft/deberta-v3-large": Family("deberta-v2", DebertaV2Config),
    "answerdotai/ModernBERT-base": Family("modernbert", ModernBertConfig),
    "Qwen/Qwen3-8B": Family("qwen3", Qwen3Config),
    "google/gemma-2-9b-it": Family("gemma2", Gemma2Config),
}

MAX_POSITIONS = 128

# --- vocabulary shared by the tokenizers and the synthetic texts --------------------------------

TOPIC_WORDS = {
    "algebra": "equation solve variable polynomial root factor linear quadratic coefficient",
    "geometry": "triangle circle angle radius area perimeter polygon chord tangent",
    "number": "prime divisor integer modulo remainder gcd digit parity congruence",
    "probability": "dice coin chance expected random event outcome sample uniform",
    "calculus": "derivative integral limit function slope continuous series converge",
    "combinatorics": "count arrangement choose permutation subset graph colouring path",
    "statistics": "mean median variance estimator regression data sample deviation",
    "sequences": "term recurrence arithmetic geometric fibonacci sum pattern index",
}
GENRES = {
    "fantasy": "dragon magic wizard quest kingdom sword spell elf",
    "romance": "love heart wedding kiss letters longing summer promise",
    "mystery": "detective murder clue suspect alibi secret inspector crime",
    "history": "war empire century king revolution archive battle treaty",
    "science": "physics experiment theory universe biology evolution atom data",
    "poetry": "verse rhyme stanza sonnet image line metaphor voice",
    "comics": "panel hero villain ink issue artist cape strip",
    "children": "bunny bedtime friend picture school puppy giggle adventure",
}
_FILLER_TEXT = ("the a of and to in is it this that was for on with as by at an be are from or "
          "book story read author chapter ending page really very good great slow first last "
          "question answer solution step therefore hence we get so final result check find "
          "paper abstract method results show propose model study new approach")
FILLER = tuple(_FILLER_TEXT.split())


def vocabulary() -> list[str]:
    words = set(FILLER)
    for group in (*TOPIC_WORDS.values(), *GENRES.values()):
        words.update(group.split())
    words.update(TOPIC_WORDS)
    words.update(GENRES)
    return sorted(words)


def _corpus() -> list[str]:
    rng = random.Random(0)
    words = vocabulary()
    return [" ".join(rng.choice(words) for _ in range(12)) for _ in range(400)]


# --- tokenizers -----------------------------------------------------------------------------------


def _wordpiece_vocab() -> dict[str, int]:
    """Specials, every vocabulary word, then letters and digits as pieces (nothing is [UNK] for
    plain English), like BERT's uncased vocab in miniature (counted, so deterministic)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()[]{}$+-*/=^_<>%&#@\\|~`")
    pieces = [f"##{c}" for c in chars]
    tokens = list(dict.fromkeys(specials + vocabulary() + chars + pieces))
    return {t: i for i, t in enumerate(tokens)}


def _bpe_tokenizer(bos: str, eos: str, pad: str | None) -> PreTrainedTokenizerFast:
    """A byte-level BPE (as Llama-3 and Phi-4 use) trained on the spot: every text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [s for s in dict.fromkeys([bos, eos, pad]) if s]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   pad_token=pad, model_max_length=MAX_POSITIONS)


def _cls_sep_tokenizer() -> PreTrainedTokenizerFast:
    """[CLS] text [SEP] with [PAD] id 0, as DeBERTa-v3's SentencePiece and ModernBERT's BPE
    tokenizers frame a text; a word-level vocabulary of the test words is enough here."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(specials + vocabulary()))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", unk_token="[UNK]", mask_token="[MASK]",
                                   model_max_length=MAX_POSITIONS)


# --- models ---------------------------------------------------------------------------------------


def family_of(name: str) -> Family:
    """The mapping entry for a recipe's `transformer.model`; a KeyError names the fix."""
    if name not in REAL_MODELS:
        raise KeyError(
            f"transformer.model {name!r} has no entry in tests/helpers/tiny_recipes.py "
            "REAL_MODELS: add its hub id with the real config.model_type and the config class "
            "of its family, so the recipe is smoke-tested on a tiny model of that family."
        )
    return REAL_MODELS[name]


def build_tiny_model(name: str, folder: Path) -> Path:
    """A randomly initialised, toy-sized checkpoint of `name`'s family, saved in `folder`."""
    family = family_of(name)
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if family.config is BertConfig:
        vocab = _wordpiece_vocab()
        BertTokenizer(vocab=vocab, model_max_length=MAX_POSITIONS).save_pretrained(folder)
        config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=MAX_POSITIONS)
        BertModel(config).save_pretrained(folder)
    elif family.config is DistilBertConfig:
        vocab = _wordpiece_vocab()
        DistilBertTokenizer(vocab=vocab, model_max_length=MAX_POSITIONS).save_pretrained(folder)
        config = DistilBertConfig(vocab_size=len(vocab), dim=32, n_layers=2, n_heads=2,
                                  hidden_dim=64, max_position_embeddings=MAX_POSITIONS)
        DistilBertModel(config).save_pretrained(folder)
    elif family.config in (DebertaV2Config, ModernBertConfig):
        tokenizer = _cls_sep_tokenizer()
        tokenizer.save_pretrained(folder)
        size = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 64,
                "max_position_embeddings": MAX_POSITIONS, "pad_token_id": 0}
        if family.config is ModernBertConfig:  # alternating global/local attention, as shipped
            size.update(global_attn_every_n_layers=2, local_attention=32,
                        cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
        else:  # DeBERTa-v3: relative positions (position buckets), no absolute embeddings
            size.update(relative_attention=True, position_buckets=32, position_biased_input=False,
                        pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm")
        AutoModel.from_config(family.config(**size)).save_pretrained(folder)
    elif family.config in (LlamaConfig, Phi3Config, Qwen3Config, Gemma2Config):
        if family.config is LlamaConfig:  # Llama-3's specials; no pad token, as shipped
            tokenizer = _bpe_tokenizer("<|begin_of_text|>", "<|end_of_text|>", None)
            extra = {}
        elif family.config is Qwen3Config:  # Qwen: <|endoftext|> is eos and pad, no bos token
            tokenizer = _bpe_tokenizer("<|endoftext|>", "<|im_end|>", "<|endoftext|>")
            extra = {"head_dim": 16}
        elif family.config is Gemma2Config:  # Gemma: <bos>/<eos>/<pad>, soft-capped logits
            tokenizer = _bpe_tokenizer("<bos>", "<eos>", "<pad>")
            extra = {"head_dim": 16, "tie_word_embeddings": True}
        else:  # Phi-4-mini: <|endoftext|> is bos, eos and pad; partial rotary embeddings
            tokenizer = _bpe_tokenizer("<|endoftext|>", "<|endoftext|>", "<|endoftext|>")
            extra = {"partial_rotary_factor": 0.75, "tie_word_embeddings": True}
        config = family.config(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=MAX_POSITIONS, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            **{"tie_word_embeddings": False, **extra},
        )
        tokenizer.save_pretrained(folder)
        model = AutoModelForCausalLM.from_config(config)
        if family.prequantized_4bit:
            # Like unsloth's *-bnb-4bit uploads: the checkpoint holds NF4 weights and its
            # config.json a quantization_config (compute dtype bfloat16).
            full = folder / "full-precision"
            model.save_pretrained(full)
            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_use_double_quant=True,
                                       bnb_4bit_compute_dtype=torch.bfloat16)
            model = AutoModelForCausalLM.from_pretrained(full, quantization_config=quant,
                                                         dtype=torch.bfloat16)
            shutil.rmtree(full)
        model.save_pretrained(folder)
    else:
        raise AssertionError(f"no tiny builder for {family.config.__name__}")
    return folder


# --- synthetic competitions in the recipes' real layouts ------------------------------------------


def _sentence(rng: random.Random, words: str, n: int) -> str:
    pool = words.split()
    return " ".join(rng.choice(pool) if rng.random() < 0.5 else rng.choice(FILLER)
                    for _ in range(n))


def _math_topic(folder: Path, n_train: int, n_test: int) -> None:
    """Kaggle math-topic: train.csv (Question, label 0-7, no id column), test.csv (id, Question),
    sample_submission.csv (id, label). Questions carry LaTeX with braces and dollars."""
    rng = random.Random(1)
    topics = list(TOPIC_WORDS.values())

    def question(k: int) -> str:
        return (f"Let $f(x) = x^{{{k + 2}}} + \\frac{{1}}{{x}}$. "
                + _sentence(rng, topics[k], 18) + "?")

    train = pd.DataFrame([{"Question": question(i % 8), "label": i % 8} for i in range(n_train)])
    test = pd.DataFrame([{"id": 10_000 + i, "Question": question(i % 8)} for i in range(n_test)])
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "label": 0}).to_csv(folder / "sample_submission.csv",
                                                         index=False)


def _math_correctness(folder: Path, n_train: int, n_test: int) -> None:
    """question, answer, solution, is_correct (True/False); long solutions, whose END (the final
    answer) decides: the recipe truncates on the left."""
    rng = random.Random(2)
    topics = list(TOPIC_WORDS.values())

    def row(i: int) -> dict:
        correct = i % 3 == 0
        answer = str(7 + i % 5)
        final = answer if correct else str(int(answer) + 1)
        steps = " ".join(_sentence(rng, topics[i % 8], 12) + "." for _ in range(8))
        return {"question": f"Find x if {answer} = x. " + _sentence(rng, topics[i % 8], 10),
                "answer": answer, "solution": f"{steps} Therefore the final answer is {final}.",
                "is_correct": correct}

    train = pd.DataFrame([row(i) for i in range(n_train)])
    test = pd.DataFrame([{"id": 500 + i, **row(i + n_train)} for i in range(n_test)])
    train.to_csv(folder / "train.csv", index=False)
    test.drop(columns="is_correct").to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "is_correct": False}).to_csv(
        folder / "sample_submission.csv", index=False)


ARXIV_CATEGORIES = [  # primary first, as in the snapshot; one per domain of the recipe's label_map
    "cs.AI math.CO", "math.CO", "math-ph hep-th quant-ph", "stat.ML cs.LG", "q-fin.ST econ.GN",
    "q-bio.NC cs.LG", "eess.SP cs.IT", "astro-ph.GA", "cond-mat.mtrl-sci physics.comp-ph",
    "econ.EM stat.ME", "cs.CL", "q-bio.PE", "eess.AS", "stat.AP", "gr-qc", "nlin.CD math.DS",
]


def _arxiv(folder: Path, n_train: int, n_test: int) -> None:
    """The Cornell arXiv snapshot as JSON lines (id, submitter, authors, title, abstract,
    categories, versions...), test.jsonl (id, title, abstract), sample_submission.csv (id,
    categories). Ids are arXiv ids: "0704.0001", "hep-th/9901001", "2101.00010"."""
    rng = random.Random(3)
    topics = list(TOPIC_WORDS.values())

    def record(i: int, arxiv_id: str) -> dict:
        return {"id": arxiv_id, "submitter": "A. Author", "authors": "A. Author, B. Author",
                "title": _sentence(rng, topics[i % 8], 6).title(),
                "abstract": "  " + _sentence(rng, topics[i % 8], 40) + ".\n",
                "categories": ARXIV_CATEGORIES[i % len(ARXIV_CATEGORIES)],
                "versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}],
                "update_date": "2008-11-13"}

    old_style = ["hep-th/9901001", "math/0406089", "cond-mat/0102536"]
    with open(folder / "arxiv-metadata-oai-snapshot.json", "w") as f:
        for i in range(n_train):
            arxiv_id = old_style[i] if i < len(old_style) else f"0704.{i + 1:04d}"
            f.write(json.dumps(record(i, arxiv_id)) + "\n")
    test_ids = [f"2101.{10 * (i + 1):05d}" for i in range(n_test)]  # 2101.00010: a trailing 0
    with open(folder / "test.jsonl", "w") as f:
        for i, arxiv_id in enumerate(test_ids):
            rec = record(i, arxiv_id)
            f.write(json.dumps({k: rec[k] for k in ("id", "title", "abstract")}) + "\n")
    pd.DataFrame({"id": test_ids, "categories": "Computer Science"}).to_csv(
        folder / "sample_submission.csv", index=False)


def _book_genres(folder: Path, n_train: int, n_test: int) -> None:
    """Goodreads-style gzipped JSON lines (user_id, book_id, review_id, rating, review_text,
    genre); long reviews whose verdict is at the end (the recipe truncates on the left)."""
    rng = random.Random(4)
    genres = list(GENRES)

    def record(i: int) -> dict:
        genre = genres[i % len(genres)]
        body = " ".join(_sentence(rng, GENRES[genre], 14) + "." for _ in range(6))
        return {"user_id": f"{rng.getrandbits(128):032x}", "book_id": str(1000 + i),
                "review_id": f"{rng.getrandbits(128):032x}", "rating": 1 + i % 5,
                "review_text": f"{body} In the end a great {genre} book.", "genre": genre}

    train = [record(i) for i in range(n_train)]
    test = [record(i + n_train) for i in range(n_test)]
    for name, rows in (("train.jsonl.gz", train), ("test.jsonl.gz", test)):
        with gzip.open(folder / name, "wt", encoding="utf-8") as f:
            for rec in rows:
                if name.startswith("test"):
                    rec = {k: v for k, v in rec.items() if k != "genre"}
                f.write(json.dumps(rec) + "\n")
    pd.DataFrame({"review_id": [r["review_id"] for r in test], "genre": "fantasy"}).to_csv(
        folder / "sample_submission.csv", index=False)


SYNTHETIC: dict[str, Callable[[Path, int, int], None]] = {
    "math-topic": _math_topic,
    "math-correctness": _math_correctness,
    "arxiv": _arxiv,
    "book-genres": _book_genres,
}


def write_synthetic_competition(slug: str, folder: Path, n_train: int = 64,
                                n_test: int = 16) -> Path:
    """A few dozen rows of competition `slug` in its real layout, written to `folder`."""
    if slug not in SYNTHETIC:
        raise KeyError(
            f"No synthetic data for competition {slug!r}: add a writer to "
            "tests/helpers/tiny_recipes.py SYNTHETIC (its real file names, columns and formats)."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    SYNTHETIC[slug](folder, n_train, n_test)
    return folder
