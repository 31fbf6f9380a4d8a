"""GPU memory estimate before loading a model, so a run that cannot fit fails early with advice.

Made for decoder LLMs fine-tuned with LoRA/QLoRA on a 16 GB T4, and good enough for full
fine-tuning of encoders. The numbers are rules of thumb from the literature (sources next to each
formula); they aim to be within ~20 % and on the safe side, not exact. The model's shapes are read
from the model itself, built on the meta device (kit.models.llm.model_shape); whether the plan fits
and what to change is kit.models.llm.memory_fit. `measured_peak_gb` gives the real peak after
training, to compare against the plan.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from kit.errors import KitError
from kit.models.llm.memory_peak import measured_peak_gb, measured_peak_label
from kit.models.llm.model_shape import read_shape

Quantization = Literal["none", "8bit", "4bit"]

GIB = 1024**3

# CUDA context + cuBLAS/cuDNN handles and workspaces: memory the GPU loses before the first tensor
# (typically 300-500 MiB with torch; it is outside torch.cuda.max_memory_allocated).
CUDA_CONTEXT_GB = 0.45
# Caching-allocator fragmentation with variable-length batches: a share of the memory that comes
# and goes every step (activations, gradients, logits). Rule of thumb, seen 5-15 % in practice.
ALLOCATOR_SLACK = 0.10
# Sequence length planned with when transformer.max_length is null (derived from data later).
DEFAULT_PLAN_LENGTH = 512


@dataclass(frozen=True)
class MemoryInputs:
    """Everything the estimate depends on; kept so `check_fits` can re-estimate alternatives."""

    n_params: int
    hidden_size: int
    num_layers: int
    quantization: Quantization
    compute_dtype_bytes: int
    lora_rank: int  # 0: full fine-tuning (every parameter trainable)
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    optimizer: str
    intermediate_size: int
    gated_mlp: bool
    rms_norm: bool  # RMSNorm upcasting to fp32 (decoders) rather than a 16-bit LayerNorm
    num_heads: int
    vocab_size: int
    num_labels: int | None  # None: causal-LM head over the whole vocabulary
    unquantized_params: int
    head_params: int  # classification head, trained whole next to the adapters
    lora_modules: int  # linears with adapters, in the whole model
    lora_in_out: int  # sum of their in+out features: the adapters hold lora_rank times this
    lora_in_features_per_layer: int  # inputs of one layer's adapters (each keeps a dropout copy)
    lora_dropout: float
    double_quant: bool
    attention: Literal["sdpa", "eager"]
    largest_linear: int  # weights of the biggest linear (dequantized one at a time when quantized)


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimate: a breakdown in GiB, its total, and the inputs it came from."""

    inputs: MemoryInputs
    breakdown: dict[str, float]
    total_gb: float
    n_trainable: int
    notes: tuple[str, ...] = ()  # assumptions the plan had to make

    def table(self) -> str:
        """The breakdown as aligned lines, biggest first (zero rows left out), then the total."""
        width = max(len(k) for k in self.breakdown)
        rows = sorted(((k, v) for k, v in self.breakdown.items() if v > 0), key=lambda kv: -kv[1])
        lines = [f"  {name:<{width}}  {gb:7.2f} GB" for name, gb in rows]
        lines.append(f"  {'total':<{width}}  {self.total_gb:7.2f} GB")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (inputs, breakdown, total) for the run folder."""
        return {
            "inputs": dataclasses.asdict(self.inputs),
            "breakdown_gb": dict(self.breakdown),
            "total_gb": self.total_gb,
            "n_trainable": self.n_trainable,
            "notes": list(self.notes),
        }


def estimate_memory(
    *,
    n_params: int,
    hidden_size: int,
    num_layers: int,
    quantization: Quantization,
    compute_dtype_bytes: int,
    lora_rank: int,
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool,
    optimizer: str = "adamw_torch",
    intermediate_size: int | None = None,
    gated_mlp: bool = True,
    rms_norm: bool | None = None,
    num_heads: int | None = None,
    vocab_size: int = 0,
    num_labels: int | None = 2,
    unquantized_params: int | None = None,
    head_params: int | None = None,
    lora_modules: int | None = None,
    lora_in_out: int | None = None,
    lora_in_features_per_layer: int | None = None,
    lora_dropout: float = 0.05,
    double_quant: bool = True,
    attention: Literal["sdpa", "eager"] = "sdpa",
    largest_linear: int | None = None,
) -> MemoryEstimate:
    """Estimate peak GPU memory of one training step (see the module docstring for the sources).

    For shapes given by hand; `estimate_from_config` reads them all from the model. Left out, the
    LoRA targets are 7 hidden x hidden linears per layer, the head hidden x num_labels, the norms
    RMSNorm when the MLP is gated, and `unquantized_params` the input embeddings (+ an untied LM
    head when `num_labels` is None): bitsandbytes keeps them 16-bit.
    """
    if quantization != "none" and lora_rank <= 0:
        raise KitError(
            f"Quantization {quantization!r} needs LoRA adapters: quantized weights cannot be "
            "trained. Set `transformer.lora.enabled: true` or "
            "`transformer.lora.quantization: none`."
        )
    if quantization not in ("none", "8bit", "4bit"):
        raise KitError(f"Unknown quantization {quantization!r}; use 'none', '8bit' or '4bit'.")
    intermediate = intermediate_size or 4 * hidden_size
    if lora_modules is None:
        lora_modules = 7 * num_layers
    if head_params is None:
        head_params = hidden_size * num_labels if num_labels else 0
    if unquantized_params is None:
        unquantized_params = vocab_size * hidden_size * (2 if num_labels is None else 1)
    inputs = MemoryInputs(
        n_params=int(n_params),
        hidden_size=hidden_size,
        num_layers=num_layers,
        quantization=quantization,
        compute_dtype_bytes=compute_dtype_bytes,
        lora_rank=lora_rank,
        batch_size=batch_size,
        seq_len=seq_len,
        gradient_checkpointing=gradient_checkpointing,
        optimizer=optimizer,
        intermediate_size=intermediate,
        gated_mlp=gated_mlp,
        rms_norm=gated_mlp if rms_norm is None else rms_norm,
        num_heads=num_heads or max(1, hidden_size // 128),
        vocab_size=vocab_size,
        num_labels=num_labels,
        unquantized_params=min(int(unquantized_params), int(n_params)),
        head_params=head_params,
        lora_modules=lora_modules,
        lora_in_out=lora_modules * 2 * hidden_size if lora_in_out is None else lora_in_out,
        lora_in_features_per_layer=(
            lora_modules // num_layers * hidden_size
            if lora_in_features_per_layer is None
            else lora_in_features_per_layer
        ),
        lora_dropout=lora_dropout,
        double_quant=double_quant,
        attention=attention,
        largest_linear=largest_linear or hidden_size * max(hidden_size, intermediate),
    )
    return estimate_from_inputs(inputs)


def estimate_from_inputs(x: MemoryInputs) -> MemoryEstimate:
    """The estimate for these inputs (`check_fits` re-estimates changed ones with it)."""
    cb = x.compute_dtype_bytes
    full_finetune = x.lora_rank <= 0

    # --- weights ---
    if full_finetune:
        # Trainer's fp16/bf16 is autocast over fp32 master weights (loading 16-bit weights and
        # training them gives "Attempting to unscale FP16 gradients", transformers #30559), so a
        # full fine-tune holds 4 bytes/param of weights ("Model training anatomy", HF docs).
        n_trainable = x.n_params
        base_bytes = 0.0
    else:
        # LoRA: r*(in+out) per targeted linear (Hu et al. 2021), trained in fp32 like the
        # classification head (modules_to_save), which peft keeps in fp32 when autocasting.
        n_trainable = x.lora_rank * x.lora_in_out + x.head_params
        quantized = x.n_params - x.unquantized_params
        base_bytes = quantized * _bytes_per_quantized_param(x) + x.unquantized_params * cb
    trainable_bytes = n_trainable * 4.0
    grad_bytes = n_trainable * 4.0  # fp32 gradients of fp32 trainables
    optimizer_bytes = n_trainable * _optimizer_bytes_per_param(x.optimizer)

    # --- activations ---
    # Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
    # eq. (1): one layer stores s*b*h*(34 + 5*a*s/h) bytes in 16-bit, where 34 = 11 (attention)
    # + 19 (4h GeLU MLP: 3h + 4i bytes with i = 4h) + 4 (two layer norms). We generalise the MLP
    # term: gated SwiGLU/GeGLU stores its input (2h) and gate, up, act(gate), product (8i).
    # The 5*a*s^2*b softmax/dropout term exists only for eager attention; SDPA (transformers'
    # default) uses memory-efficient/flash kernels that do not keep the score matrix.
    tokens = x.batch_size * x.seq_len
    h, i = x.hidden_size, x.intermediate_size
    mlp = 2 * h + 8 * i if x.gated_mlp else 3 * h + 4 * i
    per_token = 11 * h + mlp
    if not full_finetune and x.lora_dropout > 0:
        # peft applies dropout to the input of every LoRA target separately and keeps its output
        # (2 bytes) and mask (1 byte) for backward: ~3 bytes per input feature per target.
        per_token += 3 * x.lora_in_features_per_layer
    scale = cb / 2  # the formula counts 16-bit activations; fp32 on CPU doubles it
    # Korthikanti's 4h for the two norms assumes fused 16-bit LayerNorm. The RMSNorm of the
    # HF decoder families upcasts to fp32 and keeps that fp32 input (4h) plus the normalised
    # output in the compute dtype: (4 + cb)*h per norm. Measured on a tiny Llama in the tests.
    norm_bytes = 2 * (4 + cb) * h if x.rms_norm else 4 * h * scale
    layer_bytes = tokens * (per_token * scale + norm_bytes)
    if x.attention == "eager":
        layer_bytes += 5 * x.num_heads * x.seq_len * x.seq_len * x.batch_size * scale
    layer_input_bytes = tokens * 2 * h * scale
    if x.gradient_checkpointing:
        # Full recomputation (Korthikanti §4.2; Chen et al. 2016): keep each layer's input
        # (2sbh) and recompute one layer at a time during backward.
        activation_bytes = x.num_layers * layer_input_bytes + layer_bytes
    else:
        activation_bytes = x.num_layers * layer_bytes
    # While a layer runs backward, gradients w.r.t. its activations coexist with them: about one
    # more layer's worth (rule of thumb, calibrated on published QLoRA peaks on 16 GB GPUs).
    backward_bytes = layer_bytes
    activation_bytes += 2 * layer_input_bytes  # embedding output and final-norm input

    # --- logits ---
    if x.num_labels is None:
        # Causal-LM loss over the vocabulary: 16-bit logits, their fp32 upcast, log-softmax and
        # its gradient (2 + 4 + 4 + 4 bytes per token per vocabulary entry).
        logits_bytes = tokens * x.vocab_size * 14.0
    else:
        logits_bytes = tokens * x.num_labels * 14.0

    # --- overhead ---
    dequant_bytes = x.largest_linear * cb if x.quantization != "none" else 0.0
    varying = activation_bytes + backward_bytes + logits_bytes + grad_bytes
    breakdown = {
        f"base weights ({x.quantization if x.quantization != 'none' else _dtype_name(cb)})": (
            base_bytes / GIB
        ),
        "trainable weights (fp32)": trainable_bytes / GIB,
        "gradients (fp32)": grad_bytes / GIB,
        f"optimizer states ({x.optimizer})": optimizer_bytes / GIB,
        "activations"
        + (" (gradient checkpointing)" if x.gradient_checkpointing else " (all layers kept)"): (
            activation_bytes / GIB
        ),
        "backward working set": backward_bytes / GIB,
        "logits + loss": logits_bytes / GIB,
        "CUDA context, workspaces, dequant buffer": CUDA_CONTEXT_GB + dequant_bytes / GIB,
        "allocator fragmentation": ALLOCATOR_SLACK * varying / GIB,
    }
    return MemoryEstimate(
        inputs=x,
        breakdown=breakdown,
        total_gb=sum(breakdown.values()),
        n_trainable=int(n_trainable),
    )


def _bytes_per_quantized_param(x: MemoryInputs) -> float:
    if x.quantization == "4bit":
        # NF4 (Dettmers et al. 2023, QLoRA §3): 4 bits + one fp32 absmax per block of 64 = 0.5
        # bit/param; double quantization stores the absmax in 8 bits (+ fp32 per 256 blocks):
        # 8/64 + 32/(64*256) = 0.127 bit, saving ~0.37 bit/param.
        extra_bits = 8 / 64 + 32 / (64 * 256) if x.double_quant else 32 / 64
        return (4 + extra_bits) / 8
    if x.quantization == "8bit":
        # LLM.int8 (Dettmers et al. 2022): int8 weights + one fp32 scale per row (negligible).
        return 1.0
    return float(x.compute_dtype_bytes)


def _optimizer_bytes_per_param(name: str) -> float:
    """Optimizer state per trainable parameter (HF docs "Model training anatomy")."""
    n = name.lower()
    if "lion" in n:
        return 1.0 if "8bit" in n else 4.0  # one momentum buffer
    if "8bit" in n:
        return 2.0  # bitsandbytes 8-bit Adam: two 1-byte states (Dettmers et al. 2021)
    if "adafactor" in n or n.startswith(("sgd", "adagrad", "rmsprop")):
        return 4.0  # one fp32 buffer at most (Adafactor's factored moments are smaller)
    # AdamW in fp32: exp_avg + exp_avg_sq = 8 bytes. Paged variants hold the same state but can
    # spill it to CPU RAM under pressure; the steady state is counted on the GPU.
    return 8.0


def _dtype_name(nbytes: int) -> str:
    return {2: "16-bit", 4: "fp32"}.get(nbytes, f"{nbytes}-byte")


def estimate_from_config(
    config: Any,
    *,
    quantization: Quantization,
    compute_dtype_bytes: int,
    lora_rank: int,
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool,
    optimizer: str = "adamw_torch",
    lora_targets: str | list[str] = "all-linear",
    num_labels: int | None = 2,
    lora_dropout: float = 0.05,
    double_quant: bool = True,
    attention: Literal["sdpa", "eager"] = "sdpa",
) -> MemoryEstimate:
    """Estimate for a transformers config: shapes are read from the model it builds on the meta
    device (kit.models.llm.model_shape; no weights loaded, no memory allocated).

    `lora_targets` is `transformer.lora.target_modules`: "auto", "all-linear" or module names,
    derived as the real run derives them and matched by peft itself.
    """
    shape = read_shape(config, num_labels=num_labels, lora_targets=lora_targets)
    return estimate_memory(
        n_params=shape.n_params,
        hidden_size=shape.hidden_size,
        num_layers=shape.num_layers,
        quantization=quantization,
        compute_dtype_bytes=compute_dtype_bytes,
        lora_rank=lora_rank,
        batch_size=batch_size,
        seq_len=seq_len,
        gradient_checkpointing=gradient_checkpointing,
        optimizer=optimizer,
        intermediate_size=shape.intermediate_size,
        gated_mlp=shape.gated_mlp,
        rms_norm=shape.rms_norm,
        num_heads=shape.num_heads,
        vocab_size=shape.vocab_size,
        num_labels=num_labels,
        unquantized_params=shape.n_params - shape.quantized_params,
        head_params=shape.head_params,
        lora_modules=shape.lora_modules,
        lora_in_out=shape.lora_in_out,
        lora_in_features_per_layer=shape.lora_in_features_per_layer,
        lora_dropout=lora_dropout,
        double_quant=double_quant,
        attention=attention,
        largest_linear=shape.largest_linear,
    )


__all__ = [
    "MemoryEstimate",
    "MemoryInputs",
    "estimate_from_config",
    "estimate_from_inputs",
    "estimate_memory",
    "measured_peak_gb",
    "measured_peak_label",
]
