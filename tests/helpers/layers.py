"""The floors of kit/ and an `ast` check that every kit import points down them, without cycles.

The floors (lowest first) are the README's "Layers" paragraph as data. A module may import
modules on lower floors and modules of its own package; never a higher floor, never a sibling
package on the same floor (the top floor's files are one program, the command line), and no
chain of imports may come back to where it started. Imports inside functions count. One
exception, for start-up time only: an import inside a function whose line says
`# lazy: <library>` (the kit module it imports loads that heavy library at its top) is left out
of the cycle check, never out of the floor check.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from pathlib import Path

# Lowest first; an entry is a package of kit/ or one module of it (the longest match wins).
FLOORS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("config",),
    ("core",),
    ("kaggle.cli", "kaggle.credentials"),  # the kaggle CLI client: data downloads, steps submit
    ("data", "evaluation"),
    ("tracking", "ensemble"),  # the ensemble blends predictions; its model kind is in models
    ("models",),
    ("submission",),
    ("serve",),
    ("steps",),
    ("kaggle", "search"),
    ("cli", "cli_compete", "__main__", ""),  # "" is kit/__init__.py
)


@dataclass(frozen=True)
class Import:
    """One `import`/`from` of a kit module: who imports what, where, and whether it is lazy."""

    importer: str  # dotted module name, e.g. kit.data.eda
    imported: str
    file: Path
    line: int
    lazy: str | None  # the heavy library named by a `# lazy: <library>` comment in a function

    def where(self, root: Path) -> str:
        return f"{self.file.relative_to(root)}:{self.line} ({self.importer} -> {self.imported})"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Every module under `package_dir` (kit/) by its dotted name; packages by their own name."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _lazy_comment(line: str) -> str | None:
    if "# lazy:" not in line:
        return None
    return line.split("# lazy:", 1)[1].split()[0].strip(" ,;()").split(".")[0] or None


def kit_imports(package_dir: Path) -> list[Import]:
    """Every import of a kit module in kit/, resolved to the module it loads."""
    modules = module_names(package_dir)
    root = package_dir.name
    found = []
    for name, path in modules.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source, filename=str(path))
        in_function = {id(sub) for node in ast.walk(tree)
                       if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for sub in ast.walk(node)}
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == root]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: from this module's package upwards
                    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    module = ".".join([*base, *([module] if module else [])])
                if module.split(".")[0] == root:
                    targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                               for a in node.names]
            for target in dict.fromkeys(targets):
                text = "\n".join(lines[node.lineno - 1:node.end_lineno])
                lazy = _lazy_comment(text) if id(node) in in_function else None
                found.append(Import(name, target, path, node.lineno, lazy))
    return found


def floor_of(module: str) -> tuple[int, str]:
    """The floor index of a dotted kit module and the FLOORS entry that placed it there."""
    inner = module.split(".", 1)[1] if "." in module else ""
    best: tuple[int, str] | None = None
    for index, entries in enumerate(FLOORS):
        for entry in entries:
            matches = inner == entry or (entry and inner.startswith(entry + "."))
            if matches and (best is None or len(entry) > len(best[1])):
                best = (index, entry)
    if best is None:
        raise AssertionError(f"{module} is on no floor: add its package to FLOORS in "
                             "tests/layers.py and to the README's layers paragraph.")
    return best


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def floor_violations(imports: list[Import], root: Path) -> list[str]:
    """Each import that goes up a floor or sideways into a sibling package, as file:line."""
    bad = []
    for imp in imports:
        if _package(imp.importer) == _package(imp.imported):
            continue
        (low, low_entry), (high, high_entry) = floor_of(imp.importer), floor_of(imp.imported)
        if high > low:
            bad.append(f"{imp.where(root)}: up from floor {low} ({low_entry}) "
                       f"to floor {high} ({high_entry})")
        elif high == low and low_entry != high_entry and high < len(FLOORS) - 1:
            bad.append(f"{imp.where(root)}: sideways between {low_entry} and {high_entry} "
                       f"(floor {low})")
    return bad


def lazy_marks_that_lie(imports: list[Import], package_dir: Path) -> list[str]:
    """Each `# lazy: lib` whose imported kit module does not load `lib` at its top level."""
    modules = module_names(package_dir)
    bad = []
    for imp in imports:
        if imp.lazy is None:
            continue
        tree = ast.parse(modules[imp.imported].read_text())
        top = {a.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import)
               for a in node.names}
        top |= {(node.module or "").split(".")[0] for node in tree.body
                if isinstance(node, ast.ImportFrom) and not node.level}
        if imp.lazy not in top:
            bad.append(f"{imp.where(package_dir.parent)}: marked `# lazy: {imp.lazy}` but "
                       f"{imp.imported} does not import {imp.lazy} at its top")
    return bad


def cycles(imports: list[Import], root: Path) -> list[str]:
    """Each import cycle between kit modules (lazy-marked imports left out), edge by edge."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.lazy is None and imp.importer != imp.imported:
            edges.setdefault(imp.importer, {}).setdefault(imp.imported, imp)
    found, seen_sets = [], set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                loop = [*path[path.index(nxt):], nxt]
                key = frozenset(loop)
                if key not in seen_sets:
                    seen_sets.add(key)
                    found.append(" -> ".join(
                        edges[a][b].where(root) for a, b in itertools.pairwise(loop)))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start)
    return found
