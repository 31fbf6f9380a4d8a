"""Hardware profile on faked GPUs: precision, unsloth, missing CUDA kernels, the one-GPU pin."""

from __future__ import annotations

import json
from unittest import mock

import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import TrainingArguments

from kit.errors import KitError
from kit.models.hardware import (
    DeviceQuery,
    SingleGpuTrainingArguments,
    arch_supported,
    describe,
    detect_hardware,
    model_device_map,
    pin_single_gpu,
    training_precision_kwargs,
)

# torch.cuda.get_arch_list() of real builds.
CU124 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
CU128 = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


def fake_gpu(
    name: str, capability: tuple[int, int], n: int = 1, gib: float = 15.0, arch=CU128
) -> DeviceQuery:
    """A DeviceQuery for `n` identical GPUs (total_memory in bytes, as torch reports it)."""
    return DeviceQuery(
        cuda_available=lambda: True,
        device_count=lambda: n,
        get_device_name=lambda i: name,
        get_device_capability=lambda i: capability,
        total_memory=lambda i: int(gib * 1024**3),
        get_arch_list=lambda: list(arch),
    )


NO_GPU = DeviceQuery(
    cuda_available=lambda: False,
    device_count=lambda: 0,
    get_device_name=lambda i: "",
    get_device_capability=lambda i: (0, 0),
    total_memory=lambda i: 0,
    get_arch_list=lambda: [],
)


def test_t4_trains_in_fp16_with_unsloth_and_never_bf16():
    # A T4 "supports" bf16 by emulation (pytorch #148322): the profile must not ask torch.
    with mock.patch("torch.cuda.is_bf16_supported", return_value=True):
        profile = detect_hardware(fake_gpu("Tesla T4", (7, 5)))
    assert profile.kind == "t4" and profile.device == "cuda"
    assert profile.fp16 and not profile.bf16
    assert profile.compute_dtype == "float16" and profile.compute_dtype_bytes == 2
    assert profile.supports_unsloth
    assert profile.memory_gb == pytest.approx(15.0)
    assert training_precision_kwargs(profile) == {"fp16": True, "bf16": False, "use_cpu": False}
    assert describe(profile) == "T4 (sm_75, 15.0 GB) → fp16; unsloth available"


def test_two_t4s_must_be_pinned_deliberately():
    profile = detect_hardware(fake_gpu("Tesla T4", (7, 5), n=2))
    assert profile.n_gpus == 2 and profile.n_gpus_used == 2
    with pytest.raises(KitError, match="pin_single_gpu"):
        training_precision_kwargs(profile)  # would be DataParallel by accident

    pinned = pin_single_gpu(profile)
    assert pinned.n_gpus == 2 and pinned.n_gpus_used == 1
    assert any("deliberately uses 1" in note for note in pinned.notes)
    assert training_precision_kwargs(pinned)["fp16"] is True
    assert pin_single_gpu(pinned) == pinned  # idempotent: the note is not added twice
    assert describe(pinned) == (
        "T4 (sm_75, 15.0 GB) x2 → fp16, 1 GPU used deliberately; unsloth available"
    )


def test_torchrun_processes_need_no_pin(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    profile = detect_hardware(fake_gpu("Tesla T4", (7, 5), n=2))
    assert training_precision_kwargs(profile)["fp16"] is True


def test_each_ddp_rank_loads_its_model_whole_on_its_own_gpu(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    pinned = pin_single_gpu(detect_hardware(fake_gpu("Tesla T4", (7, 5), n=2)))
    assert pinned.n_gpus_used == 1 and any("GPU 1 only" in note for note in pinned.notes)
    assert model_device_map(pinned) == {"": 1}  # 4-bit weights per process, never split


def test_p100_with_sm60_in_torch_uses_fp16_without_unsloth():
    profile = detect_hardware(fake_gpu("Tesla P100-PCIE-16GB", (6, 0), gib=15.89, arch=CU124))
    assert profile.kind == "p100"
    assert profile.fp16 and not profile.bf16 and not profile.supports_unsloth
    assert any("unsloth needs sm_70+" in note for note in profile.notes)
    assert "no unsloth" in describe(profile)


def test_p100_without_sm60_fails_at_start_with_advice():
    with pytest.raises(KitError) as err:
        detect_hardware(fake_gpu("Tesla P100-PCIE-16GB", (6, 0), arch=CU128))
    message = str(err.value)
    assert "sm_60" in message and "P100" in message
    assert "T4 x2" in message and "cu124" in message  # both ways out are named


def test_lower_ptx_entry_makes_a_gpu_supported():
    # compute_50 PTX JIT-compiles for any newer GPU, so a P100 runs even without sm_60.
    ptx_only = ["sm_50", "compute_50"]
    profile = detect_hardware(fake_gpu("Tesla P100-PCIE-16GB", (6, 0), arch=ptx_only))
    assert profile.kind == "p100"


@pytest.mark.parametrize(
    ("cap", "arch", "ok"),
    [
        ((6, 0), CU124, True),
        ((6, 0), CU128, False),
        ((8, 6), ["sm_80"], True),  # cubins run on later minors of the same major
        ((8, 0), ["sm_86"], False),  # ... not on earlier ones
        ((9, 0), ["sm_80"], False),  # ... nor across majors
        ((9, 0), ["compute_80"], True),  # PTX JITs upwards
        ((7, 5), ["compute_80"], False),  # ... never downwards
        ((9, 0), ["sm_90a"], True),  # arch-specific: exactly that GPU
        ((10, 0), ["sm_90a", "compute_90a"], False),
        ((12, 0), CU128, True),
    ],
)
def test_arch_support_follows_cuda_compatibility_rules(cap, arch, ok):
    assert arch_supported(cap, arch) is ok


def test_unknown_gpu_missing_kernels_gets_generic_advice():
    with pytest.raises(KitError, match=r"NVIDIA GeForce GTX 980 \(sm_52\).*get_arch_list"):
        detect_hardware(fake_gpu("NVIDIA GeForce GTX 980", (5, 2), arch=CU128))


def test_a100_trains_in_bf16():
    profile = detect_hardware(fake_gpu("NVIDIA A100-SXM4-40GB", (8, 0), gib=39.4))
    assert profile.kind == "ampere+"
    assert profile.bf16 and not profile.fp16 and profile.compute_dtype == "bfloat16"
    assert training_precision_kwargs(profile) == {"fp16": False, "bf16": True, "use_cpu": False}
    assert "bf16" in describe(profile)


def test_unknown_gpus_get_kind_gpu_and_precision_by_capability():
    turing = detect_hardware(fake_gpu("Quadro RTX 5000", (7, 5)))
    assert turing.kind == "gpu" and turing.fp16 and turing.supports_unsloth
    pascal = detect_hardware(fake_gpu("Tesla P40", (6, 1), arch=CU124))  # slow fp16
    assert pascal.kind == "gpu" and not pascal.fp16 and pascal.compute_dtype == "float32"


def test_cpu_profile_trains_in_fp32():
    profile = detect_hardware(NO_GPU)
    assert (profile.kind, profile.device, profile.n_gpus) == ("cpu", "cpu", 0)
    assert profile.memory_gb is None
    assert profile.compute_dtype == "float32" and profile.compute_dtype_bytes == 4
    assert training_precision_kwargs(profile) == {"fp16": False, "bf16": False, "use_cpu": True}
    assert model_device_map(profile) is None
    assert describe(profile).startswith("CPU → fp32")


def test_default_query_uses_torch():
    profile = detect_hardware()
    assert profile.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_profile_writes_as_json():
    profile = pin_single_gpu(detect_hardware(fake_gpu("Tesla T4", (7, 5), n=2)))
    data = json.loads(json.dumps(profile.to_dict()))
    assert data["capability"] == [7, 5]
    assert data["compute_dtype"] == "float16"
    assert data["n_gpus"] == 2 and data["n_gpus_used"] == 1
    assert len(data["notes"]) == len(profile.notes) >= 2


def test_whole_model_goes_to_gpu_zero():
    assert model_device_map(detect_hardware(fake_gpu("Tesla T4", (7, 5), n=2))) == {"": 0}


def test_precision_kwargs_splat_into_training_arguments(tmp_path):
    args = SingleGpuTrainingArguments(
        output_dir=str(tmp_path), report_to=[], **training_precision_kwargs(detect_hardware(NO_GPU))
    )
    assert args.device.type == "cpu" and args.n_gpu == 0 and not args.fp16


def test_single_gpu_arguments_stop_dataparallel_on_two_visible_gpus(tmp_path):
    # transformers' _setup_devices runs for real; only torch's view of the machine is faked.
    seen = {}
    try:
        with (
            mock.patch("torch.cuda.is_available", return_value=True),
            mock.patch("torch.cuda.device_count", return_value=2),
            mock.patch("torch.cuda.set_device"),
        ):
            for cls in (TrainingArguments, SingleGpuTrainingArguments):
                args = cls(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[])
                seen[cls] = (args.device.type, args.n_gpu, args.train_batch_size,
                             args.parallel_mode)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)  # forget the faked cuda device
    # The plain class shows what the fake provokes: DataParallel, and a doubled batch.
    assert seen[TrainingArguments][1:3] == (2, 8)
    assert seen[TrainingArguments][3].name == "NOT_DISTRIBUTED"
    device, n_gpu, batch, mode = seen[SingleGpuTrainingArguments]
    assert (device, n_gpu, batch, mode.name) == ("cuda", 1, 4, "NOT_PARALLEL")
