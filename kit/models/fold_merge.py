"""Fold-LoRA merge: the k fold adapters of a k-fold LoRA run become one model, exported once.

Each fold's LoRA delta is ΔW_k = s_k B_k A_k (s_k = alpha / r). Their mean is one adapter of rank
k·r: PEFT's `add_weighted_adapter(..., combination_type="cat", weights=[1/k]*k)` stacks
[w_k s_k A_k] over [B_k] with scale 1, so B A = Σ w_k s_k B_k A_k exactly (peft
tuners/lora/model.py; the PEFT merging blog: "cat" is the exact weighted merge). "linear"
averages the A and the B matrices separately, which is not the mean delta, so it is not used.
PEFT refuses to combine adapters that each keep their own copy of a module (`modules_to_save`,
the classification head), and has no rule for heads: the kit loads the folds' LoRA weights
without their heads, combines them with PEFT, and sets the head to the mean of the folds' heads.
Adapters PEFT combines wrongly without saying so (rsLoRA, DoRA, LoRA biases: peft #3761) are
refused.

The merged model is not the mean of the k models' probabilities (the network is not linear in
its weights); `merge_report` measures how far apart they are. It is written as the kit's one
export format (kit.models.export: an adapter over the recorded base, or with `weights=True` the
adapter merged into 16-bit base weights) in `models/transformer/merged/model`, with a
`merged_folds` record in its kit_export.json. kit.serve (and so `kit predict`, `kit serve`,
05_infer) prefers it to the k fold models when it is there; `kit package` ships it alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from kit.errors import KitError
from kit.models.export import EXPORT_INFO, export_for_kaggle, load_export_base
from kit.models.kinds.base import MERGED_FOLDS, fit_dirs

__all__ = ["ADAPTER_FILE", "fold_exports", "merge_fold_adapters", "merge_report",
           "merge_run_folds", "merged_export_dir"]

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter_model.safetensors"
MERGED_NAME = "merged"  # the combined adapter's name inside the PEFT model


def merged_export_dir(run_folder: str | Path, kind: str = "transformer") -> Path:
    """Where a run's merged fold model goes: `models/<kind>/merged/model`."""
    return Path(run_folder) / "models" / kind / MERGED_FOLDS / "model"


def fold_exports(run_folder: str | Path, kind: str = "transformer") -> list[Path]:
    """The fold exports of a k-fold run (`models/<kind>/r*_f*/model`, and each seed's
    `r*_f*/s*/model` when `seeds` trained several: all are merged), or a KitError."""
    base = Path(run_folder) / "models" / kind
    found = [d / "model" for d in fit_dirs(base, merged=False)
             if d != base and (d / "model" / EXPORT_INFO).is_file()]
    if len(found) < 2:
        raise KitError(
            f"{run_folder}: {len(found)} finished fold export(s) under {base} "
            f"(r*_f*/model/{EXPORT_INFO}); merging needs the k >= 2 folds of a k-fold LoRA run "
            "(cv.folds >= 2, transformer.lora.enabled: true) whose 02_train finished.")
    return found


def _check_mergeable(exports: list[Path]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The folds' export records and LoRA configs, when they can be merged exactly."""
    from peft import LoraConfig

    infos = [json.loads((e / EXPORT_INFO).read_text()) for e in exports]
    kinds = sorted({i["kind"] for i in infos})
    if kinds != ["adapter"]:
        raise KitError(
            f"The fold exports are {kinds} exports; merging needs LoRA adapters. A run with "
            "transformer.lora.merge_on_export: true saved merged weights per fold (set it to "
            "false and use `kit export RUN --merge-folds --merge-weights` for merged weights); "
            "a fully fine-tuned model has no adapters to merge.")
    for key in ("num_labels", "problem_type", "base_model", "head_modules", "quantization",
                "max_length", "task"):
        values = {json.dumps(i.get(key), sort_keys=True) for i in infos}
        if len(values) > 1:
            raise KitError(f"The fold exports differ in {key} ({sorted(values)}): they are not "
                           "folds of one run. Merge the folds of one k-fold run.")
    configs = [LoraConfig.from_pretrained(str(e)) for e in exports]
    for config, export in zip(configs, exports, strict=True):
        odd = [name for name in ("use_rslora", "use_dora", "lora_bias")
               if getattr(config, name, False)]
        if odd or config.rank_pattern or config.alpha_pattern:
            raise KitError(
                f"{export}: the adapter uses {odd or 'per-module ranks'}, which PEFT's "
                "add_weighted_adapter does not combine exactly (peft #3761); the kit merges "
                "plain LoRA adapters only.")
    return infos, configs


def merge_fold_adapters(exports: list[Path], out: str | Path, *, weights: bool = False,
                        base_model: str | Path | None = None,
                        device: str | None = None) -> Path:
    """Merge the fold adapter exports `exports` into one export at `out`; return it.

    `weights`: write the merged adapter folded into 16-bit base weights (self-contained, what
    ONNX needs) instead of the adapter. `base_model`: where the base is, when not recorded.
    """
    from peft import PeftModel, get_peft_model, get_peft_model_state_dict
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    infos, configs = _check_mergeable(exports)
    k = len(exports)
    heads = infos[0]["head_modules"]
    base = load_export_base(exports[0], base_model, device)
    names = [f"fold{i}" for i in range(k)]
    model, fold_heads = None, []
    for name, export, config in zip(names, exports, configs, strict=True):
        tensors = load_file(str(export / ADAPTER_FILE))
        head = {key: t for key, t in tensors.items() if ".lora_" not in key}
        if not head or not all(any(f".{h}." in key for h in heads) for key in head):
            raise KitError(f"{export / ADAPTER_FILE}: the head {heads} is not saved with the "
                           f"adapter (found {sorted(head)[:4]}); re-export the fold.")
        fold_heads.append(head)
        # Without modules_to_save PEFT keeps no head copy per fold, so it lets them combine.
        bare = dataclasses.replace(config, modules_to_save=None, task_type=None,
                                   inference_mode=True)
        if model is None:
            model = get_peft_model(base, bare, adapter_name=name)
        else:
            model.add_adapter(name, bare)
        loaded = set_peft_model_state_dict(
            model, {key: t for key, t in tensors.items() if key not in head}, adapter_name=name)
        if loaded.unexpected_keys:
            raise KitError(f"{export}: adapter weights the model has no place for: "
                           f"{loaded.unexpected_keys[:3]}. Merge folds of one run.")
    model.add_weighted_adapter(names, [1.0 / k] * k, MERGED_NAME, combination_type="cat")
    lora = get_peft_model_state_dict(model, adapter_name=MERGED_NAME)
    merged_head = {key: torch.stack([h[key].float() for h in fold_heads]).mean(0)
                   .to(fold_heads[0][key].dtype) for key in fold_heads[0]}
    rank = model.peft_config[MERGED_NAME].r
    config = dataclasses.replace(model.peft_config[MERGED_NAME], modules_to_save=list(heads),
                                 task_type=configs[0].task_type,
                                 base_model_name_or_path=configs[0].base_model_name_or_path)
    base = model.unload()  # the base model again, without any adapter
    tokenizer = AutoTokenizer.from_pretrained(exports[0], local_files_only=True)
    labels = json.loads((exports[0] / "labels.json").read_text())["label_names"]
    params = yaml.safe_load((exports[0] / "params.yaml").read_text())
    with tempfile.TemporaryDirectory() as adapter_dir:
        config.save_pretrained(adapter_dir)
        save_file({**lora, **merged_head}, str(Path(adapter_dir) / ADAPTER_FILE),
                  metadata={"format": "pt"})
        merged = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
        out = export_for_kaggle(merged, tokenizer, out, labels, params, merge=weights)
    import peft

    info = json.loads((out / EXPORT_INFO).read_text())
    info["merged_folds"] = {
        "folds": [e.parent.name for e in exports], "weights": [1.0 / k] * k,
        "lora": f"peft {peft.__version__} add_weighted_adapter(combination_type='cat')",
        "rank": int(rank), "head": f"mean of the {k} fold heads {heads}",
    }
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2))
    log.info("Merged %d fold adapters (rank %d each) into one of rank %d%s: %s", k,
             configs[0].r, rank, ", folded into the base weights" if weights else "", out)
    return out


def merge_run_folds(run_folder: str | Path, *, weights: bool = False,
                    base_model: str | Path | None = None, device: str | None = None,
                    kind: str = "transformer") -> Path:
    """A k-fold LoRA run's fold adapters of `kind` (a transformer, a student) merged into
    `models/<kind>/merged/model`."""
    return merge_fold_adapters(fold_exports(run_folder, kind), merged_export_dir(run_folder, kind),
                               weights=weights, base_model=base_model, device=device)


def merge_report(merged: np.ndarray, fold_mean: np.ndarray, task: str) -> dict[str, float]:
    """How the merged model's probabilities compare with the mean of the k fold models'."""
    if task == "multilabel":
        same = (merged >= 0.5) == (fold_mean >= 0.5)
        agreement = float(same.all(axis=1).mean()) if len(same) else 1.0
    else:
        agreement = float((merged.argmax(1) == fold_mean.argmax(1)).mean()) if len(merged) else 1.0
    diff = float(np.abs(merged - fold_mean).max()) if merged.size else 0.0
    return {"max_abs_diff": diff, "agreement": agreement, "rows": len(merged)}
