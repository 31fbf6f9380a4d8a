"""Export a trained classifier as a folder an internet-off Kaggle notebook loads, and load it back.

Two layouts, recorded in `kit_export.json`:

- **adapter** (`merge=False`, the default for LoRA): the LoRA adapters plus the trained head
  (`modules_to_save`) in `adapter_model.safetensors`, a few MB. The base model is NOT copied: the
  export records its path and its `transformer.model` name, and `load_exported` looks for it, in
  order, at the `base_model=` argument, the recorded path, then kit.core.model_source (packaged
  aliases and `/kaggle/input/...`). On Kaggle, attach the base model as its own dataset once and
  reuse it across submissions; the 4-bit quantization settings are recorded so the reload is the
  same model.
- **merged** (`merge=True`): the adapters merged into a fresh 16-bit copy of the base (not into
  the 4-bit weights, which would be lossy twice), saved whole. Self-contained, nothing to attach;
  predictions differ from a 4-bit-trained model by the quantization error of training.

A model without adapters (a fully fine-tuned encoder) is saved whole ("full"). Every training
path of the kit writes this one format. Every layout has the tokenizer, `labels.json`,
`params.yaml`, the task, `max_length` and truncation side, and a README line. The folder is
written under a staging name and renamed, so a killed export never looks finished.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from kit.core.atomic import staged_folder, to_jsonable, write_json
from kit.errors import KitError
from kit.models.kinds.base import EXPORT_INFO
from kit.models.llm.lora import (
    cast_head_input,
    classification_head_names,
    ensure_pad_token,
    keep_cpu_4bit_layout,
    load_base_classifier,
    resolve_model_path,
    unwrap_peft,
)

__all__ = ["EXPORT_INFO", "export_for_kaggle", "load_export_base", "load_exported"]

FORMAT_VERSION = 1
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def export_for_kaggle(
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | Path,
    label_names: list[str],
    params_dict: dict[str, Any],
    merge: bool = False,
    *,
    merged_dtype: str = "float16",
) -> Path:
    """Write `model` (+ tokenizer, labels, params) to `out_dir` for `load_exported`; return it.

    `params_dict` is the resolved run params (`Params.to_dict()`); its `transformer.model` is
    recorded as the base model's name so a Kaggle notebook can re-resolve it offline.
    """
    out = Path(out_dir)
    if merged_dtype not in _DTYPES:
        raise KitError(f"merged_dtype is {merged_dtype!r}; use one of {', '.join(_DTYPES)}.")
    inner = unwrap_peft(model)
    config = inner.config
    if len(label_names) != config.num_labels:
        raise KitError(
            f"{len(label_names)} label names {label_names} for a model with "
            f"{config.num_labels} outputs. Fix: pass the label names the model was trained with."
        )
    with staged_folder(out) as tmp:
        info = _write_model(model, tmp, label_names, params_dict, merge, merged_dtype)
        # predict_views: the test-time views every predictor averages (kit.models.hf.views).
        info.update({k: params_dict[k] for k in ("task", "max_length", "head_tokens",
                                                 "predict_views") if k in params_dict})
        info["truncation_side"] = params_dict.get("transformer", {}).get("truncation_side",
                                                                          "right")
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "labels.json", {"label_names": list(label_names),
                                         "id2label": dict(enumerate(label_names))})
        (tmp / "params.yaml").write_text(yaml.safe_dump(params_dict, sort_keys=False))
        write_json(tmp / EXPORT_INFO, info)
        (tmp / "README.md").write_text(_readme(info, out.name))
    return out


def _is_peft(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _write_model(
    model: nn.Module,
    out: Path,
    label_names: list[str],
    params_dict: dict[str, Any],
    merge: bool,
    merged_dtype: str,
) -> dict[str, Any]:
    transformer = params_dict.get("transformer", {}) if isinstance(params_dict, dict) else {}
    inner = unwrap_peft(model)
    config = inner.config
    info: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "num_labels": config.num_labels,
        "problem_type": config.problem_type,
        "pad_token_id": config.pad_token_id,
        "head_modules": classification_head_names(inner),
    }
    if not _is_peft(model):
        if getattr(inner, "is_loaded_in_4bit", False) or getattr(inner, "is_loaded_in_8bit", False):
            raise KitError("A quantized model without adapters cannot be exported; train LoRA.")
        inner.save_pretrained(out)
        return {**info, "kind": "full"}

    peft_config = model.peft_config[model.active_adapter]
    missing = [h for h in info["head_modules"] if h not in (peft_config.modules_to_save or [])]
    if missing:
        raise KitError(
            f"The classification head {missing} is not in the adapter's modules_to_save: the "
            "export would reload a random head. Fix: build the model with "
            "kit.models.llm.lora.load_lora_classifier."
        )
    quant = getattr(config, "quantization_config", None)
    quant = quant.to_dict() if hasattr(quant, "to_dict") else quant
    info.update(
        base_model=str(peft_config.base_model_name_or_path),
        base_model_name=transformer.get("model"),
        quantization=_json_safe(quant),
        target_modules=_json_safe(peft_config.target_modules),
        dtype=_dtype_name(getattr(config, "dtype", None) or torch.float32),
    )
    if not merge:
        model.save_pretrained(out)
        return {**info, "kind": "adapter"}

    # Merge into a fresh, unquantized copy of the base: the caller's model stays as it is.
    with tempfile.TemporaryDirectory() as adapter_dir:
        model.save_pretrained(adapter_dir)
        base = load_base_classifier(
            _find_base(info, None),
            config.num_labels,
            "multilabel" if config.problem_type == "multi_label_classification" else "multiclass",
            label_names,
            _DTYPES[merged_dtype],
        )
        base.config.pad_token_id = config.pad_token_id
        from peft import PeftModel

        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
        merged.save_pretrained(out)
    return {**info, "kind": "merged", "dtype": merged_dtype, "quantization": None}


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def _json_safe(value: Any) -> Any:
    """Plain JSON values: peft configs hold sets, enums and other objects (written as str)."""
    return json.loads(json.dumps(value, default=_plain))


def _plain(value: Any) -> Any:
    try:
        return to_jsonable(value)
    except TypeError:
        return str(value)


def _readme(info: dict[str, Any], name: str) -> str:
    load = f'model, tokenizer, label_names = load_exported("/kaggle/input/{name}")'
    lines = [
        f"# {name}: a compkit {info['kind']} export ({info['num_labels']} labels)",
        "",
        f"Load offline: `from kit.models.export import load_exported; {load}`",
    ]
    if info["kind"] == "adapter":
        lines += [
            "",
            f"Base model (not included): `{info.get('base_model_name') or info['base_model']}`, "
            f"trained from `{info['base_model']}`. Attach it as a Kaggle dataset and pass "
            '`base_model="/kaggle/input/<that dataset>"` if it is not found by itself.',
        ]
    return "\n".join(lines) + "\n"


def _find_base(info: dict[str, Any], base_model: str | Path | None) -> str:
    """Where the base model of an adapter export is on this machine (no hub: offline)."""
    tried = []
    for candidate in (base_model, info.get("base_model")):
        if candidate is None:
            continue
        if (Path(candidate) / "config.json").is_file():
            return str(candidate)
        tried.append(str(candidate))
    name = info.get("base_model_name")
    if name:
        try:
            path = resolve_model_path(name)
        except KitError as err:
            tried.append(f"{name} ({err})")
        else:
            if (Path(path) / "config.json").is_file():
                return path
            tried.append(path)
    raise KitError(
        f"The base model of this adapter export was not found; tried {tried}. Fix: attach the base "
        "model folder (config.json + weights) as a Kaggle dataset and pass "
        "load_exported(..., base_model='/kaggle/input/<dataset>')."
    )


def load_exported(
    out_dir: str | Path,
    base_model: str | Path | None = None,
    device: str | None = None,
) -> tuple[nn.Module, Any, list[str]]:
    """Load an `export_for_kaggle` folder offline: (model in eval mode, tokenizer, label names).

    `base_model` overrides where an adapter export's base model is (e.g. a Kaggle input folder).
    `device`: None puts it on CUDA when present (quantized models are placed while loading).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(out_dir)
    info_path = folder / EXPORT_INFO
    if not info_path.is_file():
        raise KitError(
            f"{folder} has no {EXPORT_INFO}: it is not a kit export. Fix: point load_exported at "
            "the folder export_for_kaggle wrote (on Kaggle: /kaggle/input/<dataset>)."
        )
    info = json.loads(info_path.read_text())
    label_names = json.loads((folder / "labels.json").read_text())["label_names"]
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")

    if info["kind"] in ("full", "merged"):
        dtype = _DTYPES.get(info.get("dtype", "float32"), torch.float32) if cuda else torch.float32
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=dtype, local_files_only=True
        )
    elif info["kind"] == "adapter":
        from peft import PeftModel

        base = load_export_base(folder, base_model, device)
        ensure_pad_token(tokenizer, base)
        model = PeftModel.from_pretrained(base, folder, is_trainable=False)
        cast_head_input(model, info["head_modules"])
    else:
        raise KitError(f"{info_path}: unknown export kind {info['kind']!r}; re-export the model.")
    ensure_pad_token(tokenizer, model)  # also on reload (transformers #34055)
    if not getattr(model, "hf_device_map", None) and info.get("quantization") is None:
        model.to(device or ("cuda" if cuda else "cpu"))
    model.eval()
    return model, tokenizer, label_names


def load_export_base(out_dir: str | Path, base_model: str | Path | None = None,
                     device: str | None = None) -> nn.Module:
    """The base classifier an adapter export was trained on, loaded as it trained (the recorded
    quantization and dtype on a GPU, float32 on a CPU), without the adapter."""
    folder = Path(out_dir)
    info = json.loads((folder / EXPORT_INFO).read_text())
    label_names = json.loads((folder / "labels.json").read_text())["label_names"]
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    task = "multilabel" if info["problem_type"] == "multi_label_classification" else "multiclass"
    quant = _quantization(info.get("quantization"))
    dtype = _DTYPES.get(info.get("dtype", "float32"), torch.float32) if cuda else torch.float32
    device_map = {"": 0} if quant is not None and cuda else None
    base = load_base_classifier(
        _find_base(info, base_model), info["num_labels"], task, label_names, dtype, quant,
        device_map,
    )
    keep_cpu_4bit_layout(base)  # the layout the adapter was trained with
    if quant is not None:
        _unquantized_to_float32(base)
    return base


def _unquantized_to_float32(model: nn.Module) -> None:
    """The weights a k-bit model keeps unquantized (embeddings, norms) in float32, as they
    trained: peft's prepare_model_for_kbit_training upcasts them before training, while a reload
    gets the checkpoint's 16-bit ones (a pre-quantized *-bnb-4bit upload stores bfloat16)."""
    for param in model.parameters():
        if param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.float()


def _quantization(recorded: dict[str, Any] | None) -> Any | None:
    """The BitsAndBytesConfig an adapter was trained against, so the reload is the same model."""
    if not recorded or not (recorded.get("load_in_4bit") or recorded.get("load_in_8bit")):
        return None
    from transformers import BitsAndBytesConfig

    keep = {k: v for k, v in recorded.items() if k not in ("quant_method", "_load_in_4bit",
                                                             "_load_in_8bit")}
    return BitsAndBytesConfig.from_dict(keep)
