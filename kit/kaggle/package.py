"""`python -m kit package RUN --out DIR`: a Kaggle dataset folder for an internet-off notebook.

DIR holds `wheels/` (the kit's wheel and every wheel the Kaggle image lacks, kit.kaggle.wheels),
`run/` (what predicting needs of the run: params, metrics, decision rule and the model, the
transformer's export from kit.models.export or the TF-IDF pipeline), `params.yaml`,
`kit_bootstrap.py` (the notebooks' first cell's installer) and `dataset-metadata.json`, checked
by the kaggle CLI's own code; with `include_base`, a LoRA run's base model (`base_model/`,
kit.kaggle.base_model). Unless it is a dry run it is then sent: `kaggle datasets create`
the first time, `kaggle datasets version` on later calls (the run folder's `kaggle.json`
remembers which). Folders go up zipped (`--dir-mode zip`); Kaggle unpacks them on its side.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kit.config.compete import refit_source
from kit.config.params import Params, params_from_dict
from kit.core.envinfo import LOCK_FILE
from kit.errors import KitError
from kit.kaggle import base_model, builder, metadata, wheels
from kit.kaggle import image as kaggle_image
from kit.kaggle.commands import failure, run_kaggle
from kit.kaggle.metadata import PLACEHOLDER_OWNER
from kit.models.kinds import ALL_KINDS, BLENDS
from kit.models.kinds.base import fit_dirs

log = logging.getLogger(__name__)

STATE_FILE = "kaggle.json"  # in the run folder: what was sent to Kaggle (refs, versions)
BOOTSTRAP = Path(__file__).with_name("bootstrap.py")


@dataclass
class PackageResult:
    """The dataset folder, what it holds and the kaggle commands (run, or for a dry run printed)."""

    folder: Path
    ref: str  # owner/slug
    commands: list[str]
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    wheels: wheels.WheelPlan | None = None
    answer: str = ""
    builder: builder.Builder | None = None  # --build-on-kaggle

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def kit_checkout() -> Path:
    """The checkout this kit runs from (its wheel is built from there)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise KitError(f"The kit runs from {root}, not from a git checkout, so its wheel cannot "
                       "be built. Fix: run `python -m kit package` from a clone of the repo.")
    return root


def run_params(run_folder: Path) -> Params:
    """The resolved params a run folder was made with."""
    path = run_folder / "params.yaml"
    if not path.is_file():
        raise KitError(f"{run_folder} has no params.yaml: it is not a run folder. Fix: pass "
                       "outputs/<run name>, the folder the notebooks wrote.")
    return params_from_dict(yaml.safe_load(path.read_text()), source=str(path))


def kaggle_owner(params: Params, env: Mapping[str, str], dry_run: bool) -> str:
    """Who owns the dataset and notebook: kaggle.owner, else $KAGGLE_USERNAME."""
    owner = params.kaggle.owner or env.get("KAGGLE_USERNAME", "").strip()
    if owner:
        return owner
    if dry_run:
        log.warning("No kaggle.owner in the params and no KAGGLE_USERNAME: the dry run uses %r.",
                    PLACEHOLDER_OWNER)
        return PLACEHOLDER_OWNER
    raise KitError("Who owns the Kaggle dataset? Fix: set kaggle.owner: <your Kaggle username> "
                   "in the params file (or the KAGGLE_USERNAME environment variable).")


def dataset_slug(params: Params) -> str:
    slug = params.kaggle.dataset or metadata.slugify(f"{params.name}-offline")
    return slug if len(slug) >= 6 else f"{slug}-offline"


# What 05_infer (kit.serve.Predictor) needs of a run: params, scores, rule and the models'
# final files (each fold's, for a k-fold run); never checkpoints, predictions or plots.
# ensemble.json: where runs written before models/ensemble/ kept their ensemble.
RUN_FILES = ("params.yaml", "run_state.json", "metrics.json", "decision_rule.json",
             "ensemble.json")
FINAL_FILES = {name: kind.artifact for name, kind in ALL_KINDS.items()}  # kit.models.kinds


def model_parts(run_folder: Path) -> list[str]:
    """The final model files of a run: `models/<model>/<final>`, or per fold `r0_f2/<final>`, per
    seed `s43/<final>` or both (`r0_f2/s43/<final>`), or the folds merged into one
    (`merged/<final>`, which is what kit.serve loads); models are kinds and refits `<kind>_full`."""
    parts = []
    models = run_folder / "models"
    for base in sorted(models.iterdir()) if models.is_dir() else []:
        final = FINAL_FILES.get(refit_source(base.name) or base.name)
        if final is not None:
            parts += [str((d / final).relative_to(run_folder)) for d in fit_dirs(base)
                      if (d / final).exists()]
    return parts


def copy_inference_run(run_folder: Path, dest: Path) -> Path | None:
    """Copy what predicting needs of `run_folder` into `dest`; None when it has no model.

    The runs a blend's members come from (an ensemble's `ensemble.runs`) are copied beside
    `dest` under their run names, where kit.serve looks for them (`<dest>/../<run>`).
    """
    parts = model_parts(run_folder)
    members = sorted({name for kind in BLENDS.values() for name in kind.other_runs(run_folder)})
    if not parts and not members:
        return None
    dest.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run_folder / name).is_file():
            shutil.copy2(run_folder / name, dest / name)
    for part in parts:
        (dest / part).parent.mkdir(parents=True, exist_ok=True)
        if (run_folder / part).is_dir():
            shutil.copytree(run_folder / part, dest / part)
        else:
            shutil.copy2(run_folder / part, dest / part)
    for name in members:
        copy_inference_run(run_folder.parent / name, dest.parent / name)
    return dest


def load_state(run_folder: Path) -> dict:
    path = run_folder / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def save_state(run_folder: Path, state: dict) -> None:
    (run_folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def _fresh_folder(out: Path) -> None:
    """Empty `out` for a new package; only a folder `kit package` wrote is ever deleted."""
    ours = (out / metadata.DATASET_FILE).is_file() and (out / "wheels").is_dir()
    if out.exists() and any(out.iterdir()) and not ours:
        raise KitError(f"{out} exists and was not written by `kit package`; it is left alone. "
                       "Fix: pass an empty or new --out folder.")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def package_run(
    run_folder: str | Path, out: str | Path, *, dry_run: bool = True,
    image_packages: str | Path = wheels.IMAGE_PACKAGES, target: wheels.Target | None = None,
    project_root: Path | None = None, message: str = "", env: Mapping[str, str] | None = None,
    build_on_kaggle: bool = False,
    include_base: bool = False,
) -> PackageResult:
    """Write the dataset folder for `run_folder` into `out`; send it unless `dry_run`.

    `project_root` is the checkout the kit's wheel is built from (default: this kit's own).
    `build_on_kaggle`: ship only the kit's wheel and write `<out>-builder`, a notebook that
    downloads the other wheels inside the real image (kit.kaggle.builder); pushed and followed
    after the dataset unless `dry_run`. `include_base` copies a LoRA adapter run's base weights
    into the dataset.
    """
    run_folder, out = Path(run_folder).resolve(), Path(out).resolve()
    env = os.environ if env is None else env
    params = run_params(run_folder)
    owner = kaggle_owner(params, env, dry_run)
    ref = f"{owner}/{dataset_slug(params)}"
    _fresh_folder(out)

    log.info("Building the wheels for %s", ref)
    wheel_dir = out / "wheels"
    kit_wheel = wheels.build_kit_wheel(project_root or kit_checkout(), wheel_dir)
    image = kaggle_image.read_image(image_packages)
    target = target or wheels.Target.for_image(image)
    versions = wheels.run_versions(run_folder, (project_root or kit_checkout()) / LOCK_FILE)
    plan = wheels.WheelPlan() if build_on_kaggle else wheels.download_missing(
        wheels.wheel_requirements(kit_wheel, set(), target), wheel_dir, image.versions(),
        target, versions=versions)
    plan.downloaded["compkit"] = kit_wheel

    if copy_inference_run(run_folder, out / "run") is None:
        log.warning("%s has no trained model (neither a transformer export nor a TF-IDF "
                    "pipeline): the dataset carries wheels and params only.", run_folder)
    included = False
    if include_base:
        exports = base_model.adapter_exports(run_folder, model_parts(run_folder))
        if exports:
            base_model.copy_base_model(exports, out / "run", run_folder, out, ref.split("/")[1])
            included = True
        else:
            log.warning("--include-base: %s has no LoRA adapter export (its model is whole); "
                        "no base model added.", run_folder)
    shutil.copy2(run_folder / "params.yaml", out / "params.yaml")  # the notebook's params_path
    shutil.copy2(BOOTSTRAP, out / "kit_bootstrap.py")
    metadata.write_metadata(out, metadata.DATASET_FILE, metadata.dataset_metadata(
        owner, ref.split("/")[1],
        description=f"Offline install of compkit and the exported model of run {params.name}."))
    metadata.validate(out, "dataset")

    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*"))
             if p.is_file()}
    result = PackageResult(out, ref, [], files, plan)
    send = send_dataset(out, ref, run_folder, private=params.kaggle.private,
                        message=message or f"compkit run {params.name}", dry_run=dry_run, env=env)
    result.commands, result.answer = send
    if build_on_kaggle:
        result.builder = builder.write_builder(
            out.parent / f"{out.name}-builder", owner, ref.split("/")[1], ref, versions,
            private=params.kaggle.private, accelerator=params.kaggle.accelerator)
        result.commands += result.builder.commands
        if not dry_run:
            push_builder(result.builder, run_folder, env)
    if not dry_run:  # kit push checks it: an adapter run needs its base on Kaggle
        state = load_state(run_folder)
        state["dataset"]["base_model"] = included
        save_state(run_folder, state)
    return result


def push_builder(built: builder.Builder, run_folder: Path, env: Mapping[str, str]) -> None:
    """Push the wheel builder, follow it to the end, remember it for `kit push`."""
    from kit.kaggle.kernels import DONE, VERSION_LINE, follow

    page = f"https://www.kaggle.com/code/{built.ref}"
    pushed = run_kaggle(["kernels", "push", "-p", str(built.folder)], f"push of {built.ref}",
                        page, env=env)
    found = VERSION_LINE.search(pushed.output)
    status = follow(built.ref, page, env, 30.0, 3 * 3600)
    if status != DONE:
        raise KitError(f"The wheel builder {built.ref} ended {status}. Fix: read its log at "
                       f"{page}/log (a package with no wheel for the image is named there).")
    state = load_state(run_folder)
    state[builder.STATE_KEY] = {"ref": built.ref,
                                "version": int(found.group(1)) if found else None}
    save_state(run_folder, state)


def send_dataset(out: Path, ref: str, run_folder: Path, *, private: bool = True,
                 message: str = "", dry_run: bool = False,
                 env: Mapping[str, str] | None = None) -> tuple[list[str], str]:
    """`kaggle datasets create` (first time) or `version` (later) of `out`; (commands, answer).

    The run folder's kaggle.json remembers a dataset made before; a dataset made elsewhere is
    found by the CLI ("already in use") and gets a new version instead.
    """
    state = load_state(run_folder)
    created = state.get("dataset", {}).get("ref") == ref
    zipped = ["--dir-mode", "zip"]  # subfolders go up zipped; Kaggle unpacks them on its side
    version = ["datasets", "version", "-p", str(out), "-m", message or "compkit", *zipped]
    create = ["datasets", "create", "-p", str(out), *([] if private else ["--public"]), *zipped]
    args = version if created else create
    commands = [shlex.join(["kaggle", *args])]
    if dry_run:
        return commands, "dry run: nothing sent to Kaggle"
    page = f"https://www.kaggle.com/datasets/{ref}"
    run = run_kaggle(args, f"dataset upload of {ref}", page, env=env, check=False)
    if not created and "already in use" in run.output:
        commands.append(shlex.join(["kaggle", *version]))
        run = run_kaggle(version, f"dataset version of {ref}", page, env=env)
    else:
        problem = failure(run, f"dataset upload of {ref}", page)
        if problem:
            raise KitError(problem)
    state["dataset"] = {"ref": ref, "versions": state.get("dataset", {}).get("versions", 0) + 1}
    save_state(run_folder, state)
    return commands, (run.lines or [""])[-1]
