"""What a new user reads on a run without an answer key, and the noise every notebook log had.

- 04_submit printed `local scores: {}`: it now says no answer key exists, so nothing was scored.
- Its dry-run line said "pass dry_run=False", an argument the notebook user never sees: it names
  the params switch `submit.enabled: true`.
- `TqdmWarning: IProgress not found` came from `tqdm.autonotebook`, imported (by the kit's own
  readers, transformers, datasets) inside a Jupyter kernel without ipywidgets: `import kit`
  imports it first with that one warning filtered; the text progress bar it falls back to is what
  a log wants. Checked in a real kernel, as papermill runs the notebooks.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest


def test_a_run_without_an_answer_key_says_so_and_names_the_submit_switch(project: Path):
    from kit.core.rundir import open_run
    from kit.data.competition import load_competition
    from kit.steps.decide import fit_decision_rule
    from kit.steps.submit import make_submission
    from kit.steps.train import train_models

    run = open_run("params/topics.yaml", overrides={"competition.answer_key_file": None,
                                                    "models": ["tfidf"]})
    comp = load_competition(run.params, project)
    train_models(run, comp)
    fit_decision_rule(run, comp)
    result = make_submission(run, comp)
    printed = f"local scores: {result.scores}"
    assert result.scores == {}
    assert "has no answer key" in printed and "nothing was scored locally" in printed
    assert "{}" not in printed
    assert "submit.enabled: true" in result.answer and "dry_run=False" not in result.answer
    assert "local_public" not in run.read_metrics()


def test_scores_with_an_answer_key_still_print_as_a_dict(project: Path):
    from kit.submission.build import LocalScores

    assert str(LocalScores({"local_public": 0.9}, note="unused")) == "{'local_public': 0.9}"


@pytest.mark.slow
def test_no_iprogress_warning_in_a_real_kernel(tmp_path: Path, monkeypatch):
    """A Jupyter kernel (ipykernel, as papermill starts it) without ipywidgets."""
    from nbclient import NotebookClient

    pytest.importorskip("tqdm")
    if __import__("importlib").util.find_spec("ipywidgets") is not None:
        pytest.skip("ipywidgets is installed: tqdm has its widget and never warns")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(
            "import sys, kit\nprint(kit.__file__, 'tqdm.autonotebook' in sys.modules)"),
        nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nprint(tqdm.__mro__)"),
    ])
    repo = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", repo)  # the kernel imports this checkout's kit
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={
        "metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "IProgress not found" not in text, text
    assert f"{repo}/kit/__init__.py True" in text  # kit imported tqdm.autonotebook first
    assert "tqdm.std.tqdm" in text  # the text bar (under tqdm.auto's asyncio class)


@pytest.mark.slow
def test_the_kits_papermill_starts_kernels_without_the_tcp_warning(tmp_path: Path):
    """run_all.sh's papermill (kit.core.kernels) against plain papermill, same notebook."""
    import subprocess
    import sys

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    said = {}
    for name, module in (("plain", "papermill"), ("kit", "kit.core.kernels")):
        done = subprocess.run([sys.executable, "-m", module, "in.ipynb", f"{name}.ipynb",
                               "-k", "python3", "--log-output", "--no-progress-bar"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        said[name] = done.stdout + done.stderr
        assert "42" in said[name]
    assert "running over TCP without encryption" in said["plain"]  # the source, still there
    assert "without encryption" not in said["kit"]
    assert "PAPERMILL=(\"$PY\" -m kit.core.kernels" in (
        Path(__file__).parents[1] / "run_all.sh").read_text()
