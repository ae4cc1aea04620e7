"""The import graph points one way (docs/architecture.md): read from the files on disk with ``ast``,
imports inside functions included, so that it holds whatever the packages' files are called.

- no circle among the modules of ``analysis``;
- ``experiments/evaluation`` imports nothing of ``analysis`` but ``analysis.stats``;
- ``analysis.stats`` imports numpy and the standard library only;
- ``detectors`` imports neither ``experiments`` nor ``analysis``; ``analysis`` imports no ``experiments``.
"""
from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "experiments", "detectors")
FIRST_PARTY = (*PACKAGES, "conf", "hydra_plugins")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _files() -> dict[str, Path]:
    """Every module of the packages -> its file."""
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
            if "__pycache__" not in p.parts}


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The absolute module names one import statement names (``from a import b`` names ``a.b`` when
    that is a module, else ``a``); relative imports resolved against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    names = [f"{base}.{alias.name}" for alias in node.names]
    return [n if n in _files() else base for n in names]


@cache
def _imports(module: str) -> frozenset[str]:
    """Every module ``module``'s file imports, anywhere in it (first-party or not)."""
    path = _files()[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        found.update(_imported(node, module, path.name == "__init__.py"))
    return frozenset(found - {"__future__"})


def _first_party(name: str) -> bool:
    return name.split(".")[0] in FIRST_PARTY


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _edges(package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports (the package itself left out: ``from analysis
    import x`` names x, and the packages' ``__init__`` files import nothing of theirs)."""
    modules = [m for m in _files() if _under(m, package)]
    return {m: {i for i in _imports(m) if _under(i, package) and i != package and i != m} for m in modules}


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}   # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def _violations(package: str, allowed) -> list[str]:
    """'module -> import' for every import of a module under ``package`` that ``allowed`` refuses."""
    return sorted(f"{m} -> {i}" for m in _files() if _under(m, package)
                  for i in _imports(m) if not allowed(i))


def test_the_walk_sees_the_packages():
    modules = _files()
    assert {"analysis.report", "analysis.stats", "experiments.evaluation.bootstrap", "detectors.base"} <= set(modules)
    assert "analysis.stats" in _imports("experiments.evaluation.bootstrap")
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_analysis_has_no_import_circle():
    assert _cycle(_edges("analysis")) is None


def test_the_evaluator_imports_only_the_stats_leaf_of_analysis():
    bad = _violations("experiments.evaluation", lambda i: not _under(i, "analysis") or i == "analysis.stats")
    assert not bad, "experiments/evaluation may import analysis.stats alone:\n" + "\n".join(bad)
    reached, todo = set(), [m for m in _files() if _under(m, "experiments.evaluation")]
    while todo:                     # nor reach more of analysis through other first-party modules
        module = todo.pop()
        if module in reached or module not in _files():
            continue
        reached.add(module)
        todo += [i for i in _imports(module) if i.split(".")[0] in PACKAGES]
    assert {m for m in reached if _under(m, "analysis")} == {"analysis.stats"}


def test_stats_is_a_numpy_only_leaf():
    allowed = set(sys.stdlib_module_names) | {"numpy"}
    assert not _violations("analysis.stats", lambda i: i.split(".")[0] in allowed)


def test_detectors_import_no_experiments_or_analysis():
    bad = _violations("detectors", lambda i: not (_under(i, "experiments") or _under(i, "analysis")))
    assert not bad, "\n".join(bad)


def test_analysis_imports_no_experiments():
    assert not _violations("analysis", lambda i: not _under(i, "experiments")), "analysis reads run folders only"


def test_first_party_imports_name_modules_that_exist():
    """An import of a moved or renamed first-party module is caught here, not at run time."""
    packages = {m for m, p in _files().items() if p.name == "__init__.py"}
    missing = sorted(f"{m} -> {i}" for m in _files() for i in _imports(m)
                     if _first_party(i) and i.split(".")[0] in PACKAGES and i not in _files() and i not in packages)
    assert not missing, "\n".join(missing)
