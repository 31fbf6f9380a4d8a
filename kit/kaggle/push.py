"""`python -m kit push RUN --out DIR`: bake a notebook, push it, follow it, fetch its output.

The notebook gets the run's params baked in (papermill's prepare-only mode: the parameters cell
is injected, nothing is executed) and `kernel-metadata.json` beside it (the run's dataset, the
competition, `kaggle.model_sources`), checked by the kaggle CLI's own code; a LoRA adapter run
must say where its base model comes from (kit.kaggle.base_model). Before `kaggle kernels push`
the dataset must be processed: `kaggle datasets status` every `poll_seconds` until it says
ready, with a progress line and a time limit (kit.kaggle.dataset_wait). A push whose sources
Kaggle could not attach is an error although the CLI exits 0 (kit.kaggle.commands). Then
`kaggle kernels status` every `poll_seconds` with a progress line, and on completion `kaggle
kernels output` into the run folder; a failed kernel is a KitError carrying the tail of its log.
The run folder's `kaggle.json` lists each notebook version with the dataset version it used.
For a code competition with `--submit`, the finished version is submitted with
`kaggle competitions submit -k owner/notebook -v N`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kit.errors import KitError
from kit.kaggle import cli as kaggle_cli
from kit.kaggle import metadata
from kit.kaggle.base_model import BASE_FOLDER, base_model_plan
from kit.kaggle.builder import builder_sources
from kit.kaggle.commands import SOURCE_FIX, failure, run_kaggle
from kit.kaggle.dataset_wait import status_command, wait_for_dataset
from kit.kaggle.kernels import DONE, VERSION_LINE, fetch_output, follow, log_tail
from kit.kaggle.package import (
    dataset_slug,
    kaggle_owner,
    load_state,
    model_parts,
    run_params,
    save_state,
)

log = logging.getLogger(__name__)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Notebooks that train: Kaggle lets them use the internet (only a code competition's scoring
# notebook must run offline), and `kit push` bakes a time budget into them (remote_train.py).
TRAINING_NOTEBOOKS = frozenset({"02_train"})


@dataclass
class PushResult:
    """The notebook folder, the kernel, its version and final status, the commands."""

    folder: Path
    ref: str  # owner/kernel-slug
    commands: list[str]
    version: int | None = None
    status: str = ""
    output_dir: Path | None = None
    files: list[str] = field(default_factory=list)
    submission: str = ""  # what Kaggle answered to the code-competition submission
    dataset: str = ""  # owner/slug of the attached dataset
    dataset_version: int | None = None  # the version this notebook version was pushed with
    base_model: str = ""  # where a LoRA run's base comes from on Kaggle ("" for other runs)


def bake_notebook(notebook: Path, out: Path, parameters: dict) -> Path:
    """`notebook` with `parameters` injected (papermill prepare-only: nothing runs)."""
    import papermill as pm

    pm.execute_notebook(str(notebook), str(out), parameters=parameters, prepare_only=True,
                        kernel_name="python3", progress_bar=False, log_output=False)
    return out


def kaggle_parameters(params_path: str, run_name: str) -> dict:
    """The notebook parameters for a run on Kaggle: params from the dataset, outputs kept.

    Folders of the machine the run was trained on mean nothing on Kaggle: they are reset so the
    kit searches Kaggle's own (`/kaggle/input/<slug>`, `/kaggle/working`).
    """
    return {"params_path": params_path, "run_name": run_name,
            "overrides": {"output_dir": "/kaggle/working/outputs", "competition.data_dir": None,
                          "platform.input_dir": None, "platform.working_dir": None,
                          "platform.checkpoint_dir": None}}


def prepare_push(run_folder: str | Path, out: str | Path, *, notebook: str | None = None,
                 dry_run: bool = True, env: Mapping[str, str] | None = None,
                 overrides: dict | None = None, kernel_sources: list[str] | None = None,
                 output_dir: Path | None = None,
                 dataset_folder: str | Path | None = None) -> PushResult:
    """Write `out`/<notebook>.ipynb (params baked) and kernel-metadata.json, validated.

    `overrides` are added to the baked params overrides; `kernel_sources` ("owner/slug")
    attach notebooks' outputs; `output_dir` receives the output (default
    <run>/kaggle_output). A training notebook (TRAINING_NOTEBOOKS) runs with the internet
    on; any other with `kaggle.internet`. `dataset_folder`: the dataset just packaged for this
    push (else the run folder's kaggle.json says what was sent); it decides whether a LoRA
    run's base model travels in it.
    """
    run_folder, out = Path(run_folder).resolve(), Path(out).resolve()
    env = os.environ if env is None else env
    params = run_params(run_folder)
    kag = params.kaggle
    name = notebook or kag.notebook
    source = NOTEBOOKS / f"{name}.ipynb"
    if not source.is_file():
        known = ", ".join(sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")))
        raise KitError(f"No notebook {source}. Fix: kaggle.notebook (or --notebook) is one of "
                       f"{known}.")
    owner = kaggle_owner(params, env, dry_run)
    slug = kag.kernel or metadata.slugify(f"{params.name}-{name}")
    dataset = f"{owner}/{dataset_slug(params)}"
    in_dataset = ((Path(dataset_folder) / BASE_FOLDER / "config.json").is_file()
                  if dataset_folder is not None
                  else bool(load_state(run_folder).get("dataset", {}).get("base_model")))
    plan = base_model_plan(run_folder, model_parts(run_folder), in_dataset=in_dataset,
                           model_sources=list(kag.model_sources))
    if plan:
        log.info("%s", plan)
    meta = metadata.kernel_metadata(
        owner, slug, f"{name}.ipynb", private=kag.private, accelerator=kag.accelerator,
        internet=kag.internet or name in TRAINING_NOTEBOOKS, code_competition=kag.code_competition,
        scoring=name not in TRAINING_NOTEBOOKS,
        kernel_sources=[*(kernel_sources or []),  # a continued session: the previous output
                        *builder_sources(load_state(run_folder))],  # --build-on-kaggle wheels
        dataset_sources=[dataset], competition_sources=[params.competition.slug],
        model_sources=list(kag.model_sources))
    if out.exists():
        if not (out / metadata.KERNEL_FILE).is_file() and any(out.iterdir()):
            raise KitError(f"{out} exists and was not written by `kit push`; it is left alone. "
                           "Fix: pass an empty or new --out folder.")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    params_path = f"/kaggle/input/{dataset_slug(params)}/params.yaml"
    baked = kaggle_parameters(params_path, params.name)
    baked["overrides"].update(overrides or {})
    bake_notebook(source, out / f"{name}.ipynb", baked)
    metadata.write_metadata(out, metadata.KERNEL_FILE, meta)
    metadata.validate(out, "kernel")
    ref = f"{owner}/{slug}"
    output = output_dir or run_folder / "kaggle_output"
    commands = [shlex.join(c) for c in (["kaggle", *status_command(dataset)],
                                        ["kaggle", "kernels", "push", "-p", str(out)],
                                        ["kaggle", "kernels", "status", ref],
                                        ["kaggle", "kernels", "output", ref, "-p", str(output),
                                         "-o"])]
    return PushResult(out, ref, commands, output_dir=output, dataset=dataset, base_model=plan)


def push_run(
    run_folder: str | Path, out: str | Path, *, notebook: str | None = None,
    dry_run: bool = True, submit: bool = False, env: Mapping[str, str] | None = None,
    poll_seconds: float = 30.0, max_hours: float | None = None,
    sleep: Callable[[float], None] = time.sleep, overrides: dict | None = None,
    kernel_sources: list[str] | None = None, allow_failed: bool = False,
    output_dir: Path | None = None, dataset_folder: str | Path | None = None,
    dataset_wait_minutes: float = 30.0,
) -> PushResult:
    """Prepare, then (unless `dry_run`) wait for the dataset, push, follow to the end, fetch the
    output, maybe submit. `dataset_wait_minutes` bounds the wait for the dataset.

    `allow_failed`: a kernel that ended in error is returned (its status and output fetched)
    instead of raised, for a caller that reads the output itself (a training session stopped
    by its time budget).
    """
    run_folder = Path(run_folder).resolve()
    params = run_params(run_folder)
    slug = params.competition.slug
    if submit and not params.kaggle.code_competition:
        raise KitError("--submit sends a notebook's output to a code competition, and "
                       "kaggle.code_competition is false. Fix: set it to true, or submit the "
                       "file with 04_submit.")
    result = prepare_push(run_folder, out, notebook=notebook, dry_run=dry_run, env=env,
                          overrides=overrides, kernel_sources=kernel_sources,
                          output_dir=output_dir, dataset_folder=dataset_folder)
    if submit:
        result.commands.append(kaggle_cli.format_command(
            slug, "submission.csv", params.submit.message or params.name, result.ref, 1
        ).replace(" -v 1 ", " -v <version> "))
    if dry_run:
        return result
    result.dataset_version = wait_for_dataset(result.dataset, env, poll_seconds,
                                              dataset_wait_minutes * 60, sleep)
    page = f"https://www.kaggle.com/code/{result.ref}"
    run = run_kaggle(["kernels", "push", "-p", str(result.folder)], f"push of {result.ref}",
                     page, env=env, check=False)
    found = VERSION_LINE.search(run.output)
    result.version = int(found.group(1)) if found else None
    if result.version is not None:
        state = load_state(run_folder)
        state["kernel"] = {"ref": result.ref, "version": result.version}
        state.setdefault("kernel_versions", []).append({
            "kernel": result.ref, "version": result.version, "dataset": result.dataset,
            "dataset_version": result.dataset_version,
            "model_sources": list(params.kaggle.model_sources),
            "pushed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        save_state(run_folder, state)
    problem = failure(run, f"push of {result.ref}", page)
    if problem:  # recorded first: a version may exist on Kaggle all the same
        raise KitError(problem)
    if params.kaggle.model_sources and result.version is not None:
        check_models_attached(result.ref, result.version, params.kaggle.model_sources, env)
    limit = (max_hours or params.kaggle.time_limit_hours) * 3600 + 1800
    result.status = follow(result.ref, page, env, poll_seconds, limit, sleep)
    result.files = fetch_output(result.ref, result.output_dir, page, env)
    if result.status != DONE and not allow_failed:
        tail = log_tail(result.output_dir, result.ref)
        raise KitError(f"Kaggle notebook {result.ref} (version {result.version}) ended "
                       f"{result.status}. The end of its log:\n{tail}"
                       f"\nFix: read the whole log at {page}/log, fix the cause, push again.")
    if submit:
        message = params.submit.message or params.name
        try:
            answer = kaggle_cli.submit(slug, "submission.csv", message, dry_run=False,
                                       kernel=result.ref, version=result.version, env=env)
        except kaggle_cli.SubmitError as err:
            _log_submission(run_folder, result, message, err.result.answer, ok=False)
            raise
        _log_submission(run_folder, result, message, answer.answer, ok=True)
        result.submission = answer.answer
        result.commands.append(answer.command)
    return result


def _log_submission(run_folder: Path, result: PushResult, message: str, answer: str,
                    ok: bool) -> None:
    """The code-competition submission in outputs/submissions.csv, as 04_submit logs its own:
    the notebook's submission.csv (its sha256) and the message `kit leaderboard --kaggle`
    joins Kaggle's score by."""
    from kit.submission.store import log_submission

    assert result.output_dir is not None
    log_submission(run_folder.parent / "submissions.csv", run=run_folder.name,
                   file=result.output_dir / "submission.csv", message=message,
                   model=f"notebook {result.ref} v{result.version}", local_public=None,
                   local_private=None, validation=None, kaggle_answer=answer, ok=ok,
                   dry_run=False)


def check_models_attached(ref: str, version: int, wanted: list[str],
                          env: Mapping[str, str] | None) -> None:
    """KitError (with the fix) when version `version` of `ref` lacks a model of `wanted`.

    `kernels push` does not print the model sources Kaggle refused (kaggle 2.2.4's
    kernels_push_cli prints invalidTags/Dataset/Competition/KernelSources only, although
    ApiSaveKernelResponse has invalid_model_sources), so the version's metadata is read back
    with `kaggle kernels pull owner/slug/N -m` (its `model_sources` are what Kaggle attached).
    """
    page = f"https://www.kaggle.com/code/{ref}"
    with tempfile.TemporaryDirectory() as folder:
        run_kaggle(["kernels", "pull", f"{ref}/{version}", "-p", folder, "-m"],
                   f"metadata check of {ref} version {version}", page, env=env)
        attached = json.loads((Path(folder) / metadata.KERNEL_FILE).read_text())
    missing = [m for m in wanted if m not in (attached.get("model_sources") or [])]
    if missing:
        raise KitError(
            f"Kaggle did not attach the model sources {missing} to {ref} version {version}, so "
            f"it runs without them. For the model sources: {SOURCE_FIX['model']}")
