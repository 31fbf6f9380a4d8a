"""The layout shows the pipeline: notebooks call only kit.steps; every module says what it does."""

import ast
import json

import pytest

from tests.conftest import REPO

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
