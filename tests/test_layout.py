"""The layout shows the pipeline: notebooks call only kit.steps; every module says what it does."""

import ast
import json

import pytest

from tests.conftest import REPO
from tests.helpers.layers import (
    FLOORS,
    Import,
    cycles,
    floor_of,
    floor_violations,
    kit_imports,
    lazy_marks_that_lie,
    module_names,
)

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
MODULES = sorted(p for p in (REPO / "kit").rglob("*.py") if p.name != "__init__.py")


def _kit_imports(source: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.split(".")[0] == "kit"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kit":
            names.append(node.module)
    return names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_import_only_the_steps(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    imports = [name for c in cells if c["cell_type"] == "code"
               for name in _kit_imports("".join(c["source"]))]
    assert imports, "a notebook calls the kit"
    assert all(name.startswith("kit.steps") for name in imports), imports


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_says_what_it_does_in_its_first_line(module):
    doc = ast.get_docstring(ast.parse(module.read_text()))
    assert doc and doc.splitlines()[0].strip(), f"{module} has no one-line docstring"


def test_library_code_logs_instead_of_printing():
    printing = []
    for module in MODULES:
        if module.name.startswith("cli") or module.name == "__main__.py":
            continue  # the command line prints its answers
        for node in ast.walk(ast.parse(module.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "print"):
                printing.append(f"{module.relative_to(REPO)}:{node.lineno}")
    assert not printing, printing


# ----------------------------------------------------------------------------- the floors

KIT = REPO / "kit"


def test_every_kit_import_points_down_the_floors():
    bad = floor_violations(kit_imports(KIT), REPO)
    assert not bad, "imports against the floors of tests/helpers/layers.py:\n" + "\n".join(bad)


def test_every_kit_import_names_a_module_that_exists():
    # Imports inside functions run late: a module moved without its lazy importers updated
    # (kit.models.source -> kit.core.model_source) fails only when that path runs.
    modules = module_names(KIT)
    missing = [imp.where(REPO) for imp in kit_imports(KIT) if imp.imported not in modules]
    assert not missing, "imports of kit modules that do not exist:\n" + "\n".join(missing)


def test_kit_has_no_import_cycles():
    found = cycles(kit_imports(KIT), REPO)
    assert not found, "import cycles:\n" + "\n".join(found)


def test_every_lazy_mark_names_a_library_the_imported_module_loads():
    bad = lazy_marks_that_lie(kit_imports(KIT), KIT)
    assert not bad, "\n".join(bad)


def test_every_package_of_kit_is_on_a_floor_and_in_the_readme():
    readme = (REPO / "README.md").read_text()
    for name in module_names(KIT):
        floor_of(name)  # raises naming the module when it is on no floor
    for entries in FLOORS:
        for entry in entries:
            if entry and "." not in entry and (KIT / entry).is_dir():
                assert f"kit/{entry}" in readme, f"kit/{entry} is missing from README.md"


def _planted_kit(tmp_path, files: dict[str, str]):
    for rel, text in files.items():
        path = tmp_path / "kit" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "kit"


def test_the_floor_check_fails_on_a_planted_upward_import(tmp_path):
    kit = _planted_kit(tmp_path, {
        "__init__.py": "",
        "config/__init__.py": "",
        "config/schema.py": '"""x"""\n\n\ndef check():\n    from kit.steps.train import fit\n',
        "steps/__init__.py": "",
        "steps/train.py": '"""x"""\nfrom kit.config import schema\n',
    })
    bad = floor_violations(kit_imports(kit), tmp_path)
    assert bad == ["kit/config/schema.py:5 (kit.config.schema -> kit.steps.train): "
                   "up from floor 1 (config) to floor 9 (steps)"]
    # and the same planted import fails the real tree's test
    real = kit_imports(KIT)
    planted = Import("kit.core.rundir", "kit.models.fit", KIT / "core" / "rundir.py", 1, None)
    assert floor_violations([*real, planted], REPO)[-1].startswith(
        "kit/core/rundir.py:1 (kit.core.rundir -> kit.models.fit): up from floor 2 (core)")


def test_the_floor_check_fails_sideways_and_a_lazy_mark_does_not_excuse_it(tmp_path):
    kit = _planted_kit(tmp_path, {
        "data/__init__.py": "",
        "data/eda.py": '"""x"""\n\n\ndef f():\n    from kit.evaluation import m  # lazy: numpy\n',
        "evaluation/__init__.py": "",
        "evaluation/m.py": '"""x"""\nimport numpy\n',
    })
    imports = kit_imports(kit)
    assert [i.lazy for i in imports] == ["numpy"]
    assert floor_violations(imports, tmp_path) == [
        "kit/data/eda.py:5 (kit.data.eda -> kit.evaluation.m): sideways between data and "
        "evaluation (floor 4)"]
    assert lazy_marks_that_lie(imports, kit) == []


def test_the_cycle_check_names_each_edge_and_skips_only_true_lazy_imports(tmp_path):
    kit = _planted_kit(tmp_path, {
        "serve/__init__.py": "",
        "serve/models.py": '"""x"""\n\n\ndef load():\n    from kit.serve import predictor\n',
        "serve/predictor.py": '"""x"""\nfrom kit.serve.models import load\n',
        "models/__init__.py": "",
        "models/fit.py": '"""x"""\n\n\ndef f():\n    from kit.models import hf  # lazy: torch\n',
        "models/hf.py": '"""x"""\nimport torch\nfrom kit.models.fit import f\n',
        "models/lie.py": '"""x"""\n\n\ndef f():\n    from kit.models import fit  # lazy: torch\n',
    })
    imports = kit_imports(kit)
    assert cycles(imports, tmp_path) == [
        "kit/serve/models.py:5 (kit.serve.models -> kit.serve.predictor) -> "
        "kit/serve/predictor.py:2 (kit.serve.predictor -> kit.serve.models)"]
    assert lazy_marks_that_lie(imports, kit) == [
        "kit/models/lie.py:5 (kit.models.lie -> kit.models.fit): marked `# lazy: torch` but "
        "kit.models.fit does not import torch at its top"]


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in MODULES}
    over = {name: n for name, n in long.items() if n > 400}
    assert not over, f"split these by concern (STYLE.md: small modules): {over}"
