"""GPU memory plan: plausible totals for known LLMs, monotonic behaviour, advice when too big."""

from __future__ import annotations

import dataclasses
import json
import re
import resource
import time

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    LlamaConfig,
    Phi3Config,
    Qwen2Config,
)

from kit.config.params import LoraParams, TransformerParams
from kit.errors import KitError
from kit.models.hardware import HardwareProfile
from kit.models.llm.lora import classification_head_names, derive_target_modules
from kit.models.llm.memory_fit import check_fits, plan_from_params
from kit.models.llm.memory_plan import (
    GIB,
    estimate_from_config,
    estimate_from_inputs,
    estimate_memory,
    measured_peak_gb,
    measured_peak_label,
)
from kit.models.llm.model_shape import build_meta_model, count_params_from_config

# Real shapes (config.json of meta-llama/Llama-3.1-8B and microsoft/Phi-4-mini-instruct).
LLAMA_8B = LlamaConfig(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, vocab_size=128256,
)
PHI4_MINI = Phi3Config(
    hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=24,
    num_key_value_heads=8, vocab_size=200064, tie_word_embeddings=True,
)
TINY = LlamaConfig(
    hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=512, num_labels=2, pad_token_id=0,
)
# Tiny models of the families whose shapes differ: fused qkv_proj/gate_up_proj (Phi-3), q/k/v
# biases (Qwen2), post-norm encoder with biases, pooler and learned positions (BERT).
TINY_PHI3 = Phi3Config(
    hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=512, pad_token_id=0, eos_token_id=2,
)
TINY_QWEN2 = Qwen2Config(
    hidden_size=256, intermediate_size=704, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=512, pad_token_id=0,
)
TINY_BERT = BertConfig(
    hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
    vocab_size=512, max_position_embeddings=128,
)
TINY_MODELS = {"llama": TINY, "phi3": TINY_PHI3, "qwen2": TINY_QWEN2, "bert": TINY_BERT}
T4 = HardwareProfile(
    kind="t4", device="cuda", gpu_name="Tesla T4", capability=(7, 5), n_gpus=1, memory_gb=15.0,
    fp16=True, bf16=False, supports_unsloth=True, n_gpus_used=1,
)
QLORA = dict(quantization="4bit", compute_dtype_bytes=2, lora_rank=32, batch_size=4, seq_len=512,
             gradient_checkpointing=True)


def test_param_counts_match_the_published_sizes():
    assert count_params_from_config(LLAMA_8B, num_labels=None) == pytest.approx(8.03e9, rel=0.01)
    assert count_params_from_config(PHI4_MINI, num_labels=None) == pytest.approx(3.84e9, rel=0.01)
    # A classifier swaps the 128k x 4096 LM head for a small score head.
    assert count_params_from_config(LLAMA_8B, num_labels=2) == pytest.approx(7.50e9, rel=0.01)


@pytest.mark.parametrize("family", TINY_MODELS)
def test_param_count_from_the_meta_model_equals_a_built_model(family):
    config = TINY_MODELS[family]
    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_config(config)
    assert count_params_from_config(config, num_labels=2) == sum(
        p.numel() for p in classifier.parameters()
    )
    if family != "bert":
        causal = AutoModelForCausalLM.from_config(config)
        assert count_params_from_config(config, num_labels=None) == sum(
            p.numel() for p in causal.parameters()
        )
    estimate = estimate_from_config(config, **QLORA)
    assert estimate.inputs.n_params == count_params_from_config(config, num_labels=2)


def test_meta_model_of_an_8b_llama_is_quick_and_takes_no_memory():
    def rss_bytes() -> int:  # resident now (ru_maxrss would only give the peak so far)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    build_meta_model(TINY)  # imports the Llama modelling code, as the plan's first call does
    before, start = rss_bytes(), time.perf_counter()
    model = build_meta_model(LLAMA_8B)
    seconds, grown = time.perf_counter() - start, rss_bytes() - before
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(7.5e9, rel=0.01)
    assert grown < 200 * 2**20  # 30 GB in fp32 if it were real
    assert seconds < 2.0


def test_llama_8b_qlora_fits_a_t4_and_fp16_does_not():
    qlora = estimate_from_config(LLAMA_8B, **QLORA)
    assert 5.0 < qlora.total_gb < 12.0
    check_fits(qlora, 15.0, "Llama-3.1-8B QLoRA")  # does not raise
    assert qlora.breakdown["base weights (4bit)"] == pytest.approx(4.3, abs=0.3)
    fp16 = estimate_from_config(LLAMA_8B, **{**QLORA, "quantization": "none"})
    assert fp16.breakdown["base weights (16-bit)"] > 13.5  # 7.5e9 params x 2 bytes
    assert fp16.total_gb > 16.0
    with pytest.raises(KitError):
        check_fits(fp16, 15.0, "Llama-3.1-8B LoRA fp16")


def test_more_batch_or_length_costs_more_and_quantization_saves():
    base = estimate_from_config(PHI4_MINI, **dict(QLORA, lora_rank=16, batch_size=16)).inputs
    total = {}
    for name, change in {
        "base": {},
        "batch32": {"batch_size": 32},
        "seq1024": {"seq_len": 1024},
        "8bit": {"quantization": "8bit"},
        "none": {"quantization": "none"},
        "no_ckpt": {"gradient_checkpointing": False},
        "eager": {"attention": "eager"},
        "fp32": {"compute_dtype_bytes": 4},
        "no_dq": {"double_quant": False},
        "adam8bit": {"optimizer": "paged_adamw_8bit"},
        "r64": {"lora_rank": 64},
    }.items():
        # As check_fits re-estimates its fixes: same model shapes, other settings.
        total[name] = estimate_from_inputs(dataclasses.replace(base, **change)).total_gb
    assert total["base"] < total["batch32"] and total["base"] < total["seq1024"]
    assert total["base"] < total["8bit"] < total["none"]
    assert total["base"] < total["no_ckpt"] and total["base"] < total["eager"]
    assert total["base"] < total["fp32"] and total["base"] < total["no_dq"]
    assert total["adam8bit"] < total["base"] < total["r64"]


def test_checkpointing_shrinks_activations_not_weights():
    kept = estimate_from_config(PHI4_MINI, **{**QLORA, "gradient_checkpointing": False})
    ckpt = estimate_from_config(PHI4_MINI, **QLORA)
    assert ckpt.breakdown["activations (gradient checkpointing)"] * 5 < kept.breakdown[
        "activations (all layers kept)"
    ]
    assert ckpt.breakdown["base weights (4bit)"] == kept.breakdown["base weights (4bit)"]


def test_double_quant_saves_about_0_37_bit_per_quantized_param():
    shape = dict(n_params=10**9, hidden_size=2048, num_layers=16, quantization="4bit",
                 compute_dtype_bytes=2, lora_rank=8, batch_size=1, seq_len=128,
                 gradient_checkpointing=True, unquantized_params=0)
    on = estimate_memory(**shape, double_quant=True)
    off = estimate_memory(**shape, double_quant=False)
    saved_bits = (off.breakdown["base weights (4bit)"] - on.breakdown["base weights (4bit)"])
    assert saved_bits * GIB * 8 / 1e9 == pytest.approx(0.373, abs=0.005)
    assert on.breakdown["base weights (4bit)"] * GIB / 1e9 == pytest.approx(0.516, abs=0.002)


EXPLICIT_TARGETS = {
    "llama": ["q_proj", "v_proj"], "phi3": ["qkv_proj"], "qwen2": ["q_proj", "down_proj"],
    "bert": ["query", "value"],
}


@pytest.mark.parametrize("targets", ["auto", "all-linear", "explicit"])
@pytest.mark.parametrize("family", TINY_MODELS)
def test_lora_trainables_match_peft(family, targets):
    from peft import LoraConfig, get_peft_model

    config = TINY_MODELS[family]
    setting = EXPLICIT_TARGETS[family] if targets == "explicit" else targets
    base = AutoModelForSequenceClassification.from_config(config)
    heads = classification_head_names(base)
    model = get_peft_model(base, LoraConfig(
        r=8, target_modules=derive_target_modules(base, setting), modules_to_save=heads,
        task_type="SEQ_CLS",
    ))
    trainable, _ = model.get_nb_trainable_parameters()
    estimate = estimate_from_config(config, **{**QLORA, "lora_rank": 8}, lora_targets=setting)
    assert estimate.n_trainable == trainable


def test_phi3_is_planned_with_its_fused_projections():
    fused = estimate_from_config(PHI4_MINI, **QLORA, lora_targets=["qkv_proj"])
    # One A (hidden x r) and one B (r x q+k+v) per layer, and the 2-class head.
    assert fused.n_trainable == 32 * 32 * (3072 + 3072 + 2 * 1024) + 3072 * 2
    # The real run refuses Llama's names on Phi-3; the plan says so before loading too.
    with pytest.raises(KitError, match="qkv_proj"):
        estimate_from_config(PHI4_MINI, **QLORA, lora_targets=["q_proj", "k_proj", "v_proj"])


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_activation_formula_is_close_to_what_autograd_saves(family):
    # Count the bytes autograd keeps for backward in a real forward pass (fp32, CPU). Phi-3's
    # fused projections have fewer LoRA inputs, so fewer dropout copies, than Llama's.
    from peft import LoraConfig, get_peft_model

    config = TINY_MODELS[family]
    torch.manual_seed(0)
    batch, seq = 2, 128
    ids = torch.randint(1, config.vocab_size, (batch, seq))
    for dropout in (0.0, 0.05):
        model = get_peft_model(
            AutoModelForSequenceClassification.from_config(config),
            LoraConfig(r=8, lora_dropout=dropout, target_modules="all-linear", task_type="SEQ_CLS"),
        )
        model.train()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved: dict[int, int] = {}

        def pack(t, saved=saved, params=params):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                saved[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids)
        measured = sum(saved.values()) / GIB
        planned = estimate_from_config(
            config, quantization="none", compute_dtype_bytes=4, lora_rank=8, batch_size=batch,
            seq_len=seq, gradient_checkpointing=False, lora_dropout=dropout,
        ).breakdown["activations (all layers kept)"]
        assert measured <= planned < 1.3 * measured  # on the safe side, not wildly


def test_quantized_weights_match_bitsandbytes(tmp_path):
    from transformers import BitsAndBytesConfig

    AutoModelForSequenceClassification.from_config(TINY).save_pretrained(tmp_path)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, quantization_config=quant, dtype=torch.bfloat16
    )
    planned = estimate_from_config(TINY, **QLORA).breakdown["base weights (4bit)"]
    assert planned == pytest.approx(model.get_memory_footprint() / GIB, rel=0.1)


def test_check_fits_names_the_fields_to_change_biggest_saving_first():
    estimate = estimate_from_config(
        LLAMA_8B, quantization="none", compute_dtype_bytes=2, lora_rank=32, batch_size=8,
        seq_len=512, gradient_checkpointing=False,
    )
    with pytest.raises(KitError) as err:
        check_fits(estimate, 15.0, "params/llm.yaml: transformer")
    message = str(err.value)
    assert message.startswith("params/llm.yaml: transformer")
    assert "15.0 GB budget" in message and "activations (all layers kept)" in message
    for field in ("transformer.batch_size", "transformer.grad_accum", "transformer.max_length",
                  "transformer.lora.quantization", "transformer.gradient_checkpointing",
                  "transformer.lora.r"):
        assert f"`{field}" in message
    steps = [float(gb) for gb in re.findall(r"^  \d+\. .* → ([\d.]+) GB", message, re.M)]
    assert steps and steps == sorted(steps, reverse=True)  # each step saves more
    assert steps[-1] <= 15.0 and "(fits)" in message


def test_check_fits_says_when_no_setting_is_enough():
    huge = dataclasses.replace(LLAMA_8B, num_hidden_layers=160)  # ~37B parameters
    estimate = estimate_from_config(huge, **QLORA)
    with pytest.raises(KitError, match="smaller model"):
        check_fits(estimate, 15.0, "huge")


def test_check_fits_without_budget_checks_nothing():
    check_fits(estimate_from_config(LLAMA_8B, **{**QLORA, "quantization": "none"}), None, "cpu")


def test_full_finetune_advice_offers_qlora():
    estimate = estimate_from_config(
        LLAMA_8B, quantization="none", compute_dtype_bytes=2, lora_rank=0, batch_size=8,
        seq_len=512, gradient_checkpointing=False,
    )
    assert estimate.breakdown["trainable weights (fp32)"] > 25  # fp32 master weights
    with pytest.raises(KitError, match=r"transformer\.lora\.enabled: true"):
        check_fits(estimate, 15.0, "full")


def test_quantization_without_lora_is_a_user_error():
    with pytest.raises(KitError, match=r"transformer\.lora\.enabled"):
        estimate_from_config(LLAMA_8B, **{**QLORA, "lora_rank": 0})


def test_plan_from_params_reads_the_transformer_section():
    cfg = TransformerParams(
        model="x", batch_size=4, max_length=512, gradient_checkpointing=True,
        lora=LoraParams(enabled=True, r=32, quantization="4bit", target_modules="all-linear"),
    )
    planned = plan_from_params(cfg, LLAMA_8B, T4)
    assert planned.total_gb == pytest.approx(estimate_from_config(LLAMA_8B, **QLORA).total_gb)
    assert planned.notes == ()
    json.dumps(planned.to_dict())  # written to the run folder

    no_length = plan_from_params(dataclasses.replace(cfg, max_length=None), LLAMA_8B, T4)
    assert no_length.inputs.seq_len == 512 and "max_length" in no_length.notes[0]
    assert plan_from_params(cfg, LLAMA_8B, T4, max_length=256).inputs.seq_len == 256

    full = plan_from_params(dataclasses.replace(cfg, lora=LoraParams()), LLAMA_8B, T4)
    assert full.inputs.quantization == "none" and full.inputs.lora_rank == 0


def test_measured_peak_on_cpu_is_the_process_rss():
    peak = measured_peak_gb("cpu")
    assert peak is not None and 0.01 < peak < 512
    assert "RSS" in measured_peak_label("cpu")
    assert "max_memory_allocated" in measured_peak_label("cuda:0")
    if not torch.cuda.is_available():
        assert measured_peak_gb("cuda") is None
