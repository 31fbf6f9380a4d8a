"""What every notebook does first: check its parameters, open the run, load the competition."""

from __future__ import annotations

import ast
import difflib
import logging
from typing import Any

from kit.core.carry_over import carry_over_session
from kit.core.logs import show_logs
from kit.core.rundir import RunDir, open_run, resolve_params, run_path
from kit.data.competition import Competition, load_competition
from kit.errors import KitError, show_kit_errors_without_traceback

log = logging.getLogger(__name__)

NOTEBOOK_PARAMETERS = ("params_path", "run_name", "overrides")


def injected_parameter_names(cell_sources: list[str]) -> list[str]:
    """Names assigned in papermill's injected-parameters cell (it starts with `# Parameters`)."""
    names: list[str] = []
    for source in cell_sources:
        if not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign):
                names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def check_injected_parameters(cell_sources: list[str]) -> None:
    """Refuse unknown papermill `-p` names: papermill itself only warns about them."""
    for name in injected_parameter_names(cell_sources):
        if name not in NOTEBOOK_PARAMETERS:
            close = difflib.get_close_matches(name, NOTEBOOK_PARAMETERS, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise KitError(
                f"Unknown notebook parameter `{name}`.{hint} The notebooks take "
                f"{', '.join(NOTEBOOK_PARAMETERS)}; put params changes in `overrides`, e.g. "
                "-y 'overrides: {transformer.epochs: 1}'."
            )


def start(params_path: str, run_name: str = "", overrides: dict[str, Any] | None = None,
          load_data: bool = True) -> tuple[RunDir, Competition | None]:
    """Open (or continue) the run and load its competition, with readable errors."""
    show_kit_errors_without_traceback()
    show_logs()
    try:
        from IPython import get_ipython

        ip = get_ipython()
        if ip is not None:
            check_injected_parameters(list(ip.user_ns.get("In", [])))
    except ImportError:
        pass
    if overrides is not None and not isinstance(overrides, dict):
        raise KitError(f"`overrides` must be a dict of params keys to values, got {overrides!r}.")
    params, root = resolve_params(params_path, run_name, overrides)
    # A continued Kaggle training session starts from the previous session's attached output.
    carry_over_session(run_path(params, root), params.name)
    run = open_run(params_path, run_name, overrides)
    log.info(f"Run {run.params.name!r} in {run.path}")
    comp = load_competition(run.params, run.root) if load_data else None
    run.record_resources("start")
    if comp is not None:
        log.info(f"{comp.slug}: {comp.task}, {len(comp.labels)} classes, {len(comp.train)} train / "
              f"{len(comp.test)} test rows, metric {run.params.competition.metric}")
    return run, comp
