"""Decoder LLMs as classifiers: tiny Llama / Phi-3 / Qwen2 built on the spot, LoRA and QLoRA."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from kit.config.params import LoraParams, TransformerParams
from kit.errors import KitError
from kit.models.hardware import HardwareProfile
from kit.models.llm import lora as llm

TEXTS = [
    "the cat sat on the mat",
    "a cat and a kitten purr",
    "dogs bark loudly at night",
    "the dog chased a ball",
    "numbers like 12 and 7 add up",
    "seven plus five is twelve",
]
LABELS = [0, 0, 1, 1, 2, 2]
LABEL_NAMES = ["cats", "dogs", "maths"]

CPU = HardwareProfile(
    kind="cpu", device="cpu", gpu_name=None, capability=None, n_gpus=0, memory_gb=None,
    fp16=False, bf16=False, supports_unsloth=False,
)


def gpu_profile(kind: str, capability: tuple[int, int], memory_gb: float = 15.0) -> HardwareProfile:
    """A faked GPU profile (nothing here touches CUDA)."""
    bf16 = capability >= (8, 0)
    return HardwareProfile(
        kind=kind, device="cuda", gpu_name=kind.upper(), capability=capability, n_gpus=1,
        memory_gb=memory_gb, fp16=not bf16, bf16=bf16, supports_unsloth=capability >= (7, 0),
        n_gpus_used=1,
    )


T4 = gpu_profile("t4", (7, 5))
P100 = gpu_profile("p100", (6, 0))
A100 = gpu_profile("ampere+", (8, 0), memory_gb=40.0)


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """A BPE tokenizer trained on the spot, with bos/eos/unk and deliberately no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(TEXTS * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def tiny_config(arch: str):
    """hidden 64, 2 layers, the tokenizer's vocabulary."""
    from transformers import LlamaConfig, Phi3Config, Qwen2Config

    tok = tiny_tokenizer()
    cls = {"llama": LlamaConfig, "phi3": Phi3Config, "qwen2": Qwen2Config}[arch]
    return cls(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=128,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None,
        tie_word_embeddings=False,
    )


def make_checkpoint(folder: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A tiny causal-LM checkpoint + tokenizer, like a downloaded base model (no head)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(tiny_config(arch)).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def make_prequantized_checkpoint(folder: Path) -> Path:
    """Like unsloth's *-bnb-4bit uploads: NF4 weights saved, bfloat16 compute in config.json."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    full = make_checkpoint(folder.with_name(folder.name + "-full"))
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(full, quantization_config=quant,
                                                 dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def lora_params(path: Path, **lora) -> TransformerParams:
    return TransformerParams(model=str(path), lora=LoraParams(enabled=True, **lora))


def load(path: Path, profile: HardwareProfile = CPU, report: dict | None = None, seed: int = 0,
         **lora):
    torch.manual_seed(seed)  # LoRA A matrices and the head are initialised randomly
    return llm.load_lora_classifier(
        lora_params(path, **lora), len(LABEL_NAMES), "multiclass", LABEL_NAMES, profile, report
    )


def train_steps(model, tokenizer, steps: int = 12, lr: float = 3e-3, texts: list[str] = TEXTS,
                labels: list[int] = LABELS) -> list[float]:
    """A few optimizer steps on one padded batch (the toy set by default); returns the losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = torch.tensor(labels)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def logits_of(model, tokenizer, texts=TEXTS) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.float()


def adapted_modules(model) -> set[str]:
    """Leaf names of the modules that carry LoRA weights."""
    return {
        n.split(".lora_A.")[0].rsplit(".", 1)[-1]
        for n, _ in model.named_parameters()
        if ".lora_A." in n
    }


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_llms")
    return {arch: make_checkpoint(root / arch, arch) for arch in ("llama", "phi3", "qwen2")}


# --- target modules and head ------------------------------------------------------------------

EXPECTED_TARGETS = {
    "llama": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
    "phi3": ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"],  # fused projections
    "qwen2": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
}


@pytest.mark.parametrize("arch", ["llama", "phi3", "qwen2"])
def test_auto_targets_are_read_from_the_model_and_exclude_the_head(checkpoints, arch):
    report: dict = {}
    model, _ = load(checkpoints[arch], report=report)
    assert report["target_modules"] == EXPECTED_TARGETS[arch]
    assert report["head_modules"] == ["score"]
    assert adapted_modules(model) == set(EXPECTED_TARGETS[arch])
    # The head is trained whole (a modules_to_save copy), not LoRA-adapted.
    assert not any("score" in n and "lora_" in n for n, _ in model.named_parameters())
    assert "score" in model.peft_config["default"].modules_to_save
    trainable_head = [n for n, p in model.named_parameters() if "score" in n and p.requires_grad]
    assert trainable_head and all("modules_to_save" in n for n in trainable_head)


def test_explicit_and_all_linear_targets(checkpoints):
    report: dict = {}
    model, _ = load(checkpoints["phi3"], report=report, target_modules=["qkv_proj"])
    assert report["target_modules"] == ["qkv_proj"]
    assert adapted_modules(model) == {"qkv_proj"}
    model, _ = load(checkpoints["llama"], target_modules="all-linear")
    # peft's all-linear skips the head too
    assert adapted_modules(model) == set(EXPECTED_TARGETS["llama"])


def test_llama_names_on_phi3_are_refused_with_the_real_names(checkpoints):
    with pytest.raises(KitError, match=r"\['q_proj'\].*qkv_proj"):
        load(checkpoints["phi3"], target_modules=["q_proj", "o_proj"])


def test_encoder_head_is_classifier_not_score():
    from transformers import AutoModelForSequenceClassification, BertConfig

    bert = AutoModelForSequenceClassification.from_config(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=64, vocab_size=100, num_labels=3)
    )
    assert llm.classification_head_names(bert) == ["classifier"]
    targets = llm.derive_target_modules(bert, "auto")
    assert "dense" in str(targets) and "classifier" not in str(targets)


# --- pad token, padding, dtypes -------------------------------------------------------------


def test_pad_token_is_set_on_tokenizer_and_config_and_batches_pool_the_last_real_token(
    checkpoints,
):
    assert tiny_tokenizer().pad_token is None  # the checkpoint really has none
    model, tok = load(checkpoints["llama"])
    assert tok.pad_token == "</s>" and tok.padding_side == "right"
    assert model.config.pad_token_id == tok.eos_token_id
    texts = ["the cat", "numbers like 12 and 7 add up"]
    batched = logits_of(model, tok, texts)  # batch of 2 with padding: needs config.pad_token_id
    alone = torch.cat([logits_of(model, tok, [t]) for t in texts])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_trainable_weights_are_float32_on_a_float16_base(checkpoints):
    from peft import get_peft_model

    base = llm.load_base_classifier(
        str(checkpoints["llama"]), 3, "multiclass", LABEL_NAMES, torch.float16
    )
    tok = tiny_tokenizer()
    llm.ensure_pad_token(tok, base)
    heads = llm.classification_head_names(base)
    targets = llm.derive_target_modules(base, "auto")
    model = get_peft_model(base, llm._lora_config(lora_params(Path(".")), targets, heads))
    llm.trainable_to_float32(model)
    llm.cast_head_input(model, heads)
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert dtypes == {torch.float32} and frozen == {torch.float16}
    # Outside autocast the fp16 hidden states meet the fp32 head: the kit casts them.
    assert logits_of(model, tok).dtype == torch.float32


def test_multilabel_sets_problem_type_and_label_maps(checkpoints):
    model, _ = llm.load_lora_classifier(
        lora_params(checkpoints["qwen2"]), 3, "multilabel", LABEL_NAMES, CPU
    )
    assert model.config.problem_type == "multi_label_classification"
    assert model.config.id2label == {0: "cats", 1: "dogs", 2: "maths"}
    with pytest.raises(KitError, match="2 label names"):
        llm.load_lora_classifier(lora_params(checkpoints["qwen2"]), 3, "multiclass", ["a", "b"],
                                 CPU)


# --- training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("quantization", ["none", "4bit", "8bit"])
def test_lora_and_qlora_training_lower_the_loss(checkpoints, quantization):
    report: dict = {}
    model, tok = load(checkpoints["llama"], report=report, quantization=quantization, dropout=0.0)
    if quantization == "4bit":
        import bitsandbytes as bnb

        q_proj = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
        assert isinstance(q_proj, bnb.nn.Linear4bit)  # really 4-bit, on CPU
        assert q_proj.weight.quant_state.quant_type == "nf4"
    assert report["compute_dtype"] == "float32"
    losses = train_steps(model, tok, steps=15, lr=5e-3)
    assert losses[-1] < 0.6 * losses[0], losses


def test_a_prequantized_checkpoint_computes_in_the_kit_dtype(tmp_path):
    """transformers keeps a pre-quantized checkpoint's own compute dtype (bfloat16, even on a
    T4, P100 or CPU) over the config passed; the kit's choice (float32 here) must win."""
    path = make_prequantized_checkpoint(tmp_path / "llama-bnb-4bit")
    model, _ = load(path, quantization="4bit")
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and {m.compute_dtype for m in layers} == {torch.float32}
    recorded = llm.unwrap_peft(model).config.quantization_config
    assert recorded.bnb_4bit_compute_dtype == torch.float32  # what an export records


# --- hardware choices -----------------------------------------------------------------------


def test_compute_dtype_and_4bit_config_follow_the_capability():
    assert llm.compute_dtype(CPU) == torch.float32
    assert llm.compute_dtype(T4) == torch.float16  # not bf16, whatever emulation claims
    assert llm.compute_dtype(P100) == torch.float16
    assert llm.compute_dtype(A100) == torch.bfloat16
    assert llm.compute_dtype(T4, "gemma3") == torch.float32  # fp16 overflow (transformers #37226)
    cfg = TransformerParams(lora=LoraParams(enabled=True, quantization="4bit"))
    quant = llm.quantization_config(cfg, T4)
    assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4"
    assert quant.bnb_4bit_use_double_quant and quant.bnb_4bit_compute_dtype == torch.float16
    assert llm.quantization_config(cfg, A100).bnb_4bit_compute_dtype == torch.bfloat16
    assert llm.quantization_config(cfg, CPU).bnb_4bit_compute_dtype == torch.float32
    eight = dataclasses.replace(cfg, lora=LoraParams(enabled=True, quantization="8bit"))
    assert llm.quantization_config(eight, T4).load_in_8bit


def test_optimizers_that_need_bitsandbytes_fall_back_without_it(monkeypatch):
    assert llm.resolve_optimizer("adamw_8bit", CPU) == ("adamw_8bit", None)
    name, notice = llm.resolve_optimizer("paged_adamw_32bit", CPU)
    assert name == "paged_adamw_32bit" and "only on CUDA" in notice
    assert llm.resolve_optimizer("paged_adamw_32bit", T4) == ("paged_adamw_32bit", None)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a)
    )
    name, notice = llm.resolve_optimizer("paged_adamw_32bit", T4)
    assert name == "adamw_torch_fused" and "bitsandbytes" in notice


def test_fused_adamw_falls_back_where_torch_lacks_the_cpu_kernel(monkeypatch):
    assert llm.resolve_optimizer("adamw_torch_fused", CPU) == ("adamw_torch_fused", None)
    from kit.models.llm import backend

    monkeypatch.setattr(backend, "fused_adamw_on_cpu", lambda: False)
    name, notice = llm.resolve_optimizer("adamw_torch_fused", CPU)
    assert name == "adamw_torch" and "fused" in notice
    assert llm.resolve_optimizer("adamw_torch_fused", T4) == ("adamw_torch_fused", None)


def test_memory_plan_stops_before_loading_on_a_gpu_that_is_too_small(tmp_path):
    cfg = dataclasses.replace(
        lora_params(make_checkpoint(tmp_path / "m")), max_length=64, memory_budget_gb=0.01
    )
    with pytest.raises(KitError, match="GPU memory"):
        llm.load_lora_classifier(cfg, 3, "multiclass", LABEL_NAMES, T4)


def test_cpu_run_records_estimate_and_measured_peak(checkpoints):
    report: dict = {}
    cfg = dataclasses.replace(lora_params(checkpoints["llama"]), max_length=32)
    llm.load_lora_classifier(cfg, 3, "multiclass", LABEL_NAMES, CPU, report)
    assert report["memory_estimate_gb"] > 0 and report["memory_after_load_gb"] > 0
    assert report["trainable_params"] < report["total_params"]


# --- unsloth selection (faked profiles; unsloth is never imported here) ----------------------


def _fake_installed(monkeypatch, installed: bool) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name == "unsloth":
            return object() if installed else None
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    ("profile", "installed", "expected"),
    [
        (CPU, True, "peft"),
        (CPU, False, "peft"),
        (P100, True, "peft"),
        (T4, False, "peft"),
        (T4, True, "unsloth"),
        (A100, True, "unsloth"),
        (A100, False, "peft"),
    ],
)
def test_unsloth_auto_only_when_installed_on_sm70_or_newer(
    monkeypatch, profile, installed, expected
):
    _fake_installed(monkeypatch, installed)
    backend, reason = llm.choose_backend("auto", profile)
    assert backend == expected
    if expected == "peft":
        assert reason.startswith("unsloth not used")
    assert llm.choose_backend("never", profile)[0] == "peft"
    assert "unsloth" not in sys.modules


def test_unsloth_auto_on_cpu_says_in_one_line_that_peft_trains(checkpoints, caplog):
    report: dict = {}
    cfg = dataclasses.replace(lora_params(checkpoints["llama"], unsloth="auto"), max_length=32)
    llm.load_lora_classifier(cfg, 3, "multiclass", LABEL_NAMES, CPU, report)
    line = "unsloth not used: there is no CUDA GPU (unsloth needs one); training with peft"
    assert report["backend"] == "peft" and report["notices"].count(line) == 1
    assert caplog.text.count(line) == 1
    report = {}
    cfg = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, unsloth="never"))
    llm.load_lora_classifier(cfg, 3, "multiclass", LABEL_NAMES, CPU, report)
    assert "notices" not in report  # 'never' was asked for: nothing to explain


@pytest.mark.parametrize(("profile", "why"), [(CPU, "no CUDA GPU"), (P100, "sm_60")])
def test_unsloth_require_on_cpu_or_p100_is_an_error_with_the_fix(monkeypatch, profile, why):
    _fake_installed(monkeypatch, True)
    with pytest.raises(KitError, match=f"'require'.*{why}.*Fix"):
        llm.choose_backend("require", profile)


def test_unsloth_require_without_the_package_says_how_to_install(monkeypatch):
    _fake_installed(monkeypatch, False)
    with pytest.raises(KitError, match="not installed"):
        llm.choose_backend("require", T4)
    _fake_installed(monkeypatch, True)
    assert llm.choose_backend("require", T4)[0] == "unsloth"


def test_ddp_processes_train_with_peft_not_unsloth(monkeypatch):
    _fake_installed(monkeypatch, True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    backend, reason = llm.choose_backend("auto", T4)
    assert backend == "peft" and "DDP" in reason
    with pytest.raises(KitError, match="DDP"):
        llm.choose_backend("require", T4)
    with pytest.raises(KitError, match="distributed: off"):
        TransformerParams(distributed="ddp", lora=LoraParams(enabled=True,
                                                             unsloth="require")).check()


# --- kill and resume of a 4-bit adapter through kit.models.hf.train ---------------------------

RESUME_STEPS, RESUME_SAVE = 12, 4


def run_tiny_qlora(checkpoint: Path, work_dir: Path):
    """A tiny 4-bit LoRA classifier trained by the kit (checkpoints every 4 of 12 steps)."""
    import numpy as np

    from kit.models.hf.train import train_transformer

    cfg = dataclasses.replace(
        lora_params(checkpoint, quantization="4bit", r=4, dropout=0.1),
        max_steps=RESUME_STEPS, save_steps=RESUME_SAVE, eval_steps=RESUME_SAVE, batch_size=4,
        eval_batch_size=8, lr=5e-3, warmup_ratio=0.0, max_length=16, class_weights="none",
    )
    return train_transformer(
        TEXTS * 4, np.array(LABELS * 4), TEXTS, np.array(LABELS), TEXTS[::-1],
        task="multiclass", label_names=LABEL_NAMES, cfg=cfg, seed=7, work_dir=work_dir,
        metric="accuracy",
    )


KILLED_CHILD = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
import kit.models.hf.trainer as hf
from helpers.kill import stop_here
from test_llm import run_tiny_qlora
from pathlib import Path

step = hf.KitTrainer.training_step
def step_then_stop(self, *args, **kwargs):  # stops itself at the chosen step for the parent
    if self.state.global_step == {stop_step}:
        stop_here()
    return step(self, *args, **kwargs)
hf.KitTrainer.training_step = step_then_stop
run_tiny_qlora(Path({checkpoint!r}), Path({work!r}))
"""


def test_killed_4bit_adapter_run_resumes_to_the_same_predictions(tmp_path):
    import signal
    import subprocess

    import numpy as np
    from safetensors import safe_open

    from tests.helpers.kill import kill_rng, kill_when_stopped

    checkpoint = make_checkpoint(tmp_path / "base")
    straight = run_tiny_qlora(checkpoint, tmp_path / "straight")
    assert straight.completed and straight.resumed_from_step is None

    work = tmp_path / "killed"
    rng, seed = kill_rng()
    stop_step = rng.randrange(RESUME_SAVE + 1, RESUME_STEPS)  # after the first checkpoint
    print(f"killing the 4-bit run at step {stop_step} (KIT_TEST_SEED={seed})")
    script = KILLED_CHILD.format(repo=str(Path(__file__).parents[1]),
                                 tests=str(Path(__file__).parent), checkpoint=str(checkpoint),
                                 work=str(work), stop_step=stop_step)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    kill_when_stopped(child)
    assert child.returncode == -signal.SIGKILL
    first = work / "checkpoints" / f"checkpoint-{RESUME_SAVE}"
    assert (first / "kit_checkpoint_complete.json").is_file()
    assert not (work / "checkpoints" / f"checkpoint-{RESUME_STEPS}").exists()  # killed mid-run

    # What Trainer checkpointed for the peft model holds the trained head, not only the adapters.
    with safe_open(str(first / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(".score." in k for k in keys) and any("lora_A" in k for k in keys)

    resumed = run_tiny_qlora(checkpoint, work)
    assert resumed.completed and resumed.resumed_from_step >= RESUME_SAVE
    np.testing.assert_allclose(resumed.val_probs, straight.val_probs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(resumed.test_probs, straight.test_probs, atol=1e-6, rtol=0)
    assert resumed.global_step == straight.global_step == RESUME_STEPS


def test_a_folder_without_config_is_refused_with_the_fix(tmp_path):
    with pytest.raises(KitError, match=r"no config\.json"):
        load(tmp_path)  # kit.core.model_source refuses it first
    with pytest.raises(KitError, match=r"no config\.json there\)\. Fix"):
        llm.read_config(str(tmp_path))
