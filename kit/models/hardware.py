"""Hardware profile chosen at the start of training: device, precision, unsloth, one GPU or two.

Decisions follow /work/shared/PITFALLS.md "Hardware and precision":
- bf16 only on compute capability >= 8.0; `torch.cuda.is_bf16_supported()` is never asked, since
  it counts emulation and says True on a T4 (pytorch PR #148322).
- fp16 on the T4 (sm_75), P100 (sm_60) and other GPUs with fast fp16; fp32 on CPU.
- unsloth only on capability >= 7.0 (unsloth #813, #1355).
- A GPU that the installed torch has no kernels for (P100 under Kaggle's cu128 image,
  Kaggle/kaggle-cli #1151) fails here, at start, with advice, not at the first CUDA op.
- Two visible GPUs (Kaggle T4 x2): `Trainer` wraps the model in `nn.DataParallel` when
  `args.n_gpu > 1` (and, for a 4-bit model it does not wrap, still multiplies the batch by
  `n_gpu` onto one GPU). The kit trains in one process on one GPU, chosen deliberately:
  `pin_single_gpu(profile)` records the choice, `SingleGpuTrainingArguments` enforces it.

Usage in the trainer:

    profile = pin_single_gpu(detect_hardware())
    args = SingleGpuTrainingArguments(output_dir=..., **training_precision_kwargs(profile), ...)
    model = ...from_pretrained(..., device_map=model_device_map(profile))
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from transformers import TrainingArguments

from kit.errors import KitError

Kind = Literal["cpu", "t4", "p100", "ampere+", "gpu"]

_GIB = 1024**3


@dataclass(frozen=True)
class DeviceQuery:
    """The torch.cuda calls that detection needs, injectable so tests can fake any GPU."""

    cuda_available: Callable[[], bool]
    device_count: Callable[[], int]
    get_device_name: Callable[[int], str]
    get_device_capability: Callable[[int], tuple[int, int]]
    total_memory: Callable[[int], int]  # bytes
    get_arch_list: Callable[[], list[str]]


def torch_device_query() -> DeviceQuery:
    """The real query, backed by torch.cuda (none of these calls needs a kernel for the GPU)."""
    import torch

    return DeviceQuery(
        cuda_available=torch.cuda.is_available,
        device_count=torch.cuda.device_count,
        get_device_name=torch.cuda.get_device_name,
        get_device_capability=lambda i: tuple(torch.cuda.get_device_capability(i)),
        total_memory=lambda i: torch.cuda.get_device_properties(i).total_memory,
        get_arch_list=torch.cuda.get_arch_list,
    )


@dataclass(frozen=True)
class HardwareProfile:
    """What training runs on and how; written to the run folder as hardware.json."""

    kind: Kind
    device: Literal["cpu", "cuda"]
    gpu_name: str | None
    capability: tuple[int, int] | None
    n_gpus: int  # visible to this process
    memory_gb: float | None  # GiB of GPU 0 (the one training uses)
    fp16: bool
    bf16: bool
    supports_unsloth: bool
    notes: tuple[str, ...] = ()
    n_gpus_used: int = 0  # what Trainer would use; pin_single_gpu() makes it 1

    @property
    def compute_dtype(self) -> Literal["float32", "float16", "bfloat16"]:
        """Name of the torch dtype for weights/activations (`getattr(torch, name)`)."""
        if self.bf16:
            return "bfloat16"
        if self.fp16:
            return "float16"
        return "float32"

    @property
    def compute_dtype_bytes(self) -> int:
        """Bytes per element of the compute dtype (for memory planning)."""
        return 4 if self.compute_dtype == "float32" else 2

    @property
    def sm(self) -> str | None:
        """The CUDA architecture name, e.g. "sm_75"."""
        return None if self.capability is None else f"sm_{self.capability[0]}{self.capability[1]}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists) including the derived compute dtype."""
        data = dataclasses.asdict(self)
        data["capability"] = list(self.capability) if self.capability else None
        data["notes"] = list(self.notes)
        data["compute_dtype"] = self.compute_dtype
        return data


def detect_hardware(query: DeviceQuery | None = None) -> HardwareProfile:
    """Look at the visible devices and decide precision and unsloth; fail fast on unusable GPUs."""
    query = query or torch_device_query()
    if not query.cuda_available() or query.device_count() < 1:
        cpu_note = "no CUDA GPU: training in float32 on CPU (fine for small models, slow for LLMs)"
        return HardwareProfile(
            kind="cpu", device="cpu", gpu_name=None, capability=None, n_gpus=0, memory_gb=None,
            fp16=False, bf16=False, supports_unsloth=False,
            notes=(cpu_note,),
            n_gpus_used=0,
        )
    n_gpus = int(query.device_count())
    name = str(query.get_device_name(0))
    major, minor = (int(v) for v in query.get_device_capability(0))
    cap = (major, minor)
    memory_gb = round(query.total_memory(0) / _GIB, 2)
    arch_list = list(query.get_arch_list())
    notes: list[str] = []

    kind = _kind(name, cap)
    _check_arch(name, cap, kind, arch_list, notes)

    bf16 = cap >= (8, 0)
    # Pascal consumer cards (sm_61: GTX 10xx, P40, P4) and older run fp16 at a tiny fraction of
    # fp32 speed; the P100 (sm_60) and Volta+ have fast fp16.
    fp16 = not bf16 and (cap == (6, 0) or cap >= (7, 0))
    if bf16:
        notes.append(f"{_sm(cap)} >= sm_80: bfloat16 mixed precision")
    elif fp16:
        notes.append(
            f"{_sm(cap)} < sm_80: float16 mixed precision (bf16 here would only be emulated); "
            "keep trainable LoRA/head weights in float32"
        )
    else:
        notes.append(f"{_sm(cap)} has slow or no float16: training in float32")
    supports_unsloth = cap >= (7, 0)
    if not supports_unsloth:
        notes.append(f"unsloth needs sm_70+, this GPU is {_sm(cap)}: plain peft is used")
    return HardwareProfile(
        kind=kind, device="cuda", gpu_name=name, capability=cap, n_gpus=n_gpus,
        memory_gb=memory_gb, fp16=fp16, bf16=bf16, supports_unsloth=supports_unsloth,
        notes=tuple(notes), n_gpus_used=n_gpus,
    )


def pin_single_gpu(profile: HardwareProfile) -> HardwareProfile:
    """Deliberately train on one GPU per process, and say so in the profile's notes.

    Several visible GPUs would make `Trainer` use `nn.DataParallel` (which breaks 4-bit models;
    transformers then skips the wrap but still feeds `n_gpu` times the batch to one GPU). Setting
    CUDA_VISIBLE_DEVICES=0 works only before CUDA initialises, which detection itself does, so
    the pin is enforced by `SingleGpuTrainingArguments` and `model_device_map`. Both GPUs are
    used by DDP, one process per GPU (kit.models.hf.distributed): each rank pins its own.
    """
    if profile.n_gpus <= 1 or profile.n_gpus_used == 1:
        return profile
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        note = (f"{profile.n_gpus} GPUs visible; DDP: {world} processes, this one uses GPU "
                f"{os.environ.get('LOCAL_RANK', '0')} only")
    else:
        note = (
            f"{profile.n_gpus} GPUs visible; training deliberately uses 1 (GPU 0): DataParallel "
            "breaks 4-bit models; transformer.distributed: auto trains with one process per GPU"
        )
    return dataclasses.replace(profile, n_gpus_used=1, notes=(*profile.notes, note))


class SingleGpuTrainingArguments(TrainingArguments):
    """TrainingArguments that never report more than one GPU, so Trainer never uses DataParallel.

    transformers 5.23 `_setup_devices` sets `_n_gpu = torch.cuda.device_count()` and every use in
    Trainer (DataParallel wrap, `train_batch_size`, loss scaling, `parallel_mode`) reads the
    `n_gpu` property, which this caps at 1. The device stays cuda:0. Under torchrun, n_gpu is
    already 1 per process, so this changes nothing there.
    """

    @property
    def n_gpu(self) -> int:
        """Number of GPUs this process uses: at most 1."""
        return min(super().n_gpu, 1)


def training_precision_kwargs(profile: HardwareProfile) -> dict[str, Any]:
    """TrainingArguments keywords for the profile's precision and device, for splatting."""
    if profile.n_gpus_used > 1 and not _launched_distributed():
        raise KitError(
            f"{profile.n_gpus} GPUs are visible and the hardware profile does not say how to use "
            "them: Trainer would wrap the model in nn.DataParallel, which breaks 4-bit models. "
            "Call kit.models.hardware.pin_single_gpu(profile) to train on one GPU deliberately "
            "(and build SingleGpuTrainingArguments), or launch with torchrun for DDP."
        )
    return {
        "fp16": profile.fp16,
        "bf16": profile.bf16,
        # Make the profile authoritative: without it Trainer would pick MPS/other accelerators.
        "use_cpu": profile.device == "cpu",
    }


def model_device_map(profile: HardwareProfile) -> dict[str, int] | None:
    """`device_map` for from_pretrained: the whole model on one GPU, never split across GPUs:
    GPU 0, or under DDP this process's own GPU (LOCAL_RANK; 4-bit models are loaded per rank)."""
    return {"": int(os.environ.get("LOCAL_RANK", "0"))} if profile.device == "cuda" else None


def describe(profile: HardwareProfile) -> str:
    """One line for a person, e.g. "T4 (sm_75, 15.0 GB) x2 → fp16, 1 GPU used deliberately"."""
    precision = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[profile.compute_dtype]
    if profile.device == "cpu":
        return f"CPU → {precision}; no unsloth"
    label = {"t4": "T4", "p100": "P100"}.get(profile.kind, profile.gpu_name or "GPU")
    head = f"{label} ({profile.sm}, {profile.memory_gb:.1f} GB)"
    if profile.n_gpus > 1:
        head += f" x{profile.n_gpus}"
    parts = [f"{head} → {precision}"]
    if profile.n_gpus > 1:
        if profile.n_gpus_used == 1:
            parts.append("1 GPU used deliberately")
        else:
            parts.append(f"{profile.n_gpus_used} GPUs (not pinned: call pin_single_gpu)")
    unsloth = "unsloth available" if profile.supports_unsloth else "no unsloth (needs sm_70+)"
    return ", ".join(parts) + "; " + unsloth


def _kind(name: str, cap: tuple[int, int]) -> Kind:
    if cap >= (8, 0):
        return "ampere+"
    if "T4" in name.upper():
        return "t4"
    if "P100" in name.upper():
        return "p100"
    return "gpu"


def _sm(cap: tuple[int, int]) -> str:
    return f"sm_{cap[0]}{cap[1]}"


_ARCH = re.compile(r"^(sm|compute)_(\d+)(\d)([a-z]?)$")


def arch_supported(cap: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a torch built for `arch_list` has kernels that run on a GPU of capability `cap`.

    CUDA compatibility rules (CUDA C Programming Guide, "Binary compatibility" and "PTX
    compatibility"): an `sm_XY` cubin runs on the same major version with minor >= Y; a
    `compute_XY` PTX entry is JIT-compiled for any capability >= X.Y. Arch-specific entries with
    a suffix (sm_90a, sm_100f) run only on exactly that capability.
    """
    for entry in arch_list:
        match = _ARCH.match(entry.strip())
        if not match:
            continue
        kind, major, minor, suffix = match[1], int(match[2]), int(match[3]), match[4]
        if suffix:
            if (major, minor) == cap:
                return True
        elif kind == "sm":
            if major == cap[0] and minor <= cap[1]:
                return True
        elif (major, minor) <= cap:
            return True
    return False


def _check_arch(
    name: str, cap: tuple[int, int], kind: Kind, arch_list: list[str], notes: list[str]
) -> None:
    if not arch_list:
        notes.append("torch reported no CUDA arch list: kernel support for this GPU not checked")
        return
    if arch_supported(cap, arch_list):
        return
    sm = _sm(cap)
    try:
        import torch

        build = f"torch {torch.__version__} (CUDA {torch.version.cuda})"
    except ImportError:  # a faked query in an environment without torch
        build = "this torch build"
    listed = " ".join(arch_list)
    if kind == "p100":
        fix = (
            "switch the Kaggle accelerator to 'GPU T4 x2', or pin the older Kaggle environment "
            "(Settings → Environment → 'Pin to original environment'), or install a torch build "
            "that still has sm_60 (the cu121/cu124/cu126 wheels)"
        )
    else:
        fix = (
            f"switch to another accelerator (Kaggle: 'GPU T4 x2'), or install a torch build whose "
            f"`torch.cuda.get_arch_list()` contains {sm}"
        )
    raise KitError(
        f"{build} has no CUDA kernels for the {name} ({sm}): it lists [{listed}]. Every CUDA "
        f"operation would fail with 'no kernel image is available for execution on the device'. "
        f"Fix: {fix}."
    )


def _launched_distributed() -> bool:
    """torchrun/accelerate launch: each process owns one GPU, so n_gpu is 1 per process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


__all__ = [
    "DeviceQuery",
    "HardwareProfile",
    "SingleGpuTrainingArguments",
    "arch_supported",
    "cpu_int8_instructions",
    "describe",
    "detect_hardware",
    "model_device_map",
    "pin_single_gpu",
    "torch_device_query",
    "training_precision_kwargs",
]


def cpu_int8_instructions() -> list[str]:
    """This CPU's int8 GEMM instructions ORT uses: "vnni" (AVX512/AVX-VNNI), "avx512bw", "avx2".

    From /proc/cpuinfo's flags (Linux); [] when unknown.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith("flags")), []))
    found = ["vnni"] if flags & {"avx512_vnni", "avx_vnni"} else []
    return found + [f for f in ("avx512bw", "avx2") if f in flags]

