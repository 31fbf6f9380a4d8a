"""A LoRA run's base model on Kaggle: copied into the dataset (`--include-base`) or a Kaggle Model.

An adapter export (`transformer.merge_on_export: false`, the default) holds the adapters and the
head, not the base weights (kit.models.export). Offline on Kaggle the base must come from one of
two places: the dataset itself (`kit package --include-base` copies it to `base_model/` and points
the copied exports' `kit_export.json` at its mount, `/kaggle/input/<dataset>/base_model`), or a
Kaggle Model attached through `kaggle.model_sources`, mounted at
`/kaggle/input/models/<owner>/<model>/<framework>/<variation>/<version>` and found there by
kit.core.model_source. `base_model_plan` says which one a run uses before anything is pushed, and
refuses an adapter run with neither.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from kit.errors import KitError
from kit.models.kinds.base import EXPORT_INFO

log = logging.getLogger(__name__)

BASE_FOLDER = "base_model"  # in the dataset folder


def adapter_exports(run_folder: Path, parts: list[str]) -> list[Path]:
    """The exports among `parts` (a run's model files) that are LoRA adapters."""
    found = []
    for part in parts:
        info = run_folder / part / EXPORT_INFO
        if info.is_file() and json.loads(info.read_text()).get("kind") == "adapter":
            found.append(run_folder / part)
    return found


def base_name(export: Path) -> str:
    """How the run named its base model (`transformer.model`, else the path it trained from)."""
    info = json.loads((export / EXPORT_INFO).read_text())
    return str(info.get("base_model_name") or info.get("base_model"))


def local_base(export: Path) -> Path:
    """The base model folder of an adapter export on this machine."""
    info = json.loads((export / EXPORT_INFO).read_text())
    recorded = info.get("base_model")
    if recorded and (Path(recorded) / "config.json").is_file():
        return Path(recorded)
    name = info.get("base_model_name")
    tried = [str(recorded)]
    if name:
        from kit.core.model_source import resolve_model

        try:
            path = Path(resolve_model(name))
        except KitError as err:
            tried.append(f"{name} ({err})")
        else:
            if (path / "config.json").is_file():
                return path
            tried.append(str(path))
    raise KitError(f"--include-base: the base model of {export} is not on this machine; tried "
                   f"{', '.join(tried)}. Fix: run `kit package` where the run was trained, or "
                   "attach the base as a Kaggle Model instead (kaggle.model_sources).")


def copy_base_model(exports: list[Path], run_copy: Path, run_folder: Path, out: Path,
                    dataset_slug: str) -> Path:
    """Copy the exports' base model to `out/base_model`; point the copied exports at its mount.

    `run_copy` is where the run's files were copied in the dataset (`out/run`). The copied
    `kit_export.json` keeps the training path as `trained_base_model`.
    """
    names = {base_name(e) for e in exports}
    if len(names) > 1:
        raise KitError(f"The adapter exports of {run_folder} name different base models "
                       f"({sorted(names)}); --include-base copies one. Fix: package the runs "
                       "separately.")
    base = local_base(exports[0])
    dest = out / BASE_FOLDER
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("*.gguf", ".*"))
    mount = f"/kaggle/input/{dataset_slug}/{BASE_FOLDER}"
    for export in exports:
        info_path = run_copy / export.relative_to(run_folder) / EXPORT_INFO
        info = json.loads(info_path.read_text())
        info["trained_base_model"], info["base_model"] = info.get("base_model"), mount
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    log.info("The base model %s (%.0f MB, from %s) travels in the dataset: %s", names.pop(),
             size / 1e6, base, mount)
    return dest


def _names_match(name: str, handle: str) -> bool:
    """kit.core.model_source's rule for a Kaggle Model mount: a part of the handle is the model's
    name, or its <model>-<variation> is."""
    want = name.rstrip("/").split("/")[-1].lower()
    parts = handle.lower().split("/")
    return want in parts or (len(parts) == 5 and f"{parts[1]}-{parts[3]}" == want)


def base_model_plan(run_folder: Path, parts: list[str], *, in_dataset: bool,
                    model_sources: list[str]) -> str:
    """Where a LoRA run's base comes from on Kaggle, said for a person; "" for other runs.

    KitError naming both fixes when an adapter run has neither the base in its dataset nor a
    Kaggle Model attached.
    """
    exports = adapter_exports(run_folder, parts)
    if not exports:
        return ""
    name = base_name(exports[0])
    if in_dataset:
        return (f"{run_folder.name} is a LoRA adapter run: its base model {name} travels in the "
                "dataset (packaged with --include-base).")
    if model_sources:
        mounts = ", ".join(f"/kaggle/input/models/{h}" for h in model_sources)
        plan = (f"{run_folder.name} is a LoRA adapter run: its base model {name} comes from the "
                f"attached Kaggle Model(s) {', '.join(model_sources)} (mounted at {mounts}).")
        if not any(_names_match(name, handle) for handle in model_sources):
            log.warning("No attached Kaggle Model is named like %s, so kit.core.model_source will "
                        "not find it there. Fix: attach the base's own Kaggle Model, or copy the "
                        "base into the dataset with --include-base.", name)
            plan += f" Warning: none of them is named like {name}."
        return plan
    raise KitError(
        f"{run_folder} is a LoRA adapter run (transformer.merge_on_export: false): offline on "
        f"Kaggle its notebook needs the base model {name}, and neither does its dataset carry "
        "it nor is a Kaggle Model attached. Fix, one of: (1) copy the base into the dataset: "
        f"`python -m kit package {run_folder} --out DIR --include-base` (or `kit push ... "
        "--dataset DIR --include-base`); (2) attach the base as a Kaggle Model: "
        "kaggle.model_sources: ['owner/model/framework/variation/version'] in the params. "
        "(Or export merged weights: transformer.merge_on_export: true.)")
