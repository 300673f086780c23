"""Layers point one way (DESIGN.md section 2, STYLE.md rule 17):

    registry, timing ◄ worlds, encoders, objectives ◄ pretrain, adapt, estimate ◄ bounds ◄ experiment ◄ report ◄ api, cli

A lower layer that needs something of a higher one takes it as an argument (``experiment.run.run``
takes the report writer), never imports it. Checked two ways: a fresh interpreter imports one package
and looks at ``sys.modules`` (what really loads, ``preadapt/__init__.py`` included), and the source is
read with ``ast`` (imports inside functions count too, which a fresh import would not load). Also: no
import cycles between the modules of src/preadapt, and no private (underscore) name imported from
another module.

Imports under ``if TYPE_CHECKING:`` are left out: they are annotations only and never run.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "preadapt"

LOWER = ["preadapt.registry", "preadapt.timing", "preadapt.worlds", "preadapt.encoders", "preadapt.objectives",
         "preadapt.pretrain", "preadapt.adapt", "preadapt.estimate", "preadapt.bounds"]
HIGHER = ["preadapt.experiment", "preadapt.report", "preadapt.api", "preadapt.cli"]

LAYER = {"preadapt": 7, "preadapt.registry": 0, "preadapt.timing": 0, "preadapt.worlds": 1, "preadapt.encoders": 1,
         "preadapt.objectives": 1, "preadapt.pretrain": 2, "preadapt.adapt": 2, "preadapt.estimate": 2,
         "preadapt.bounds": 3, "preadapt.experiment": 4, "preadapt.report": 5, "preadapt.api": 6, "preadapt.cli": 6}
"""The layer of each top-level part of the package (``preadapt`` itself, the lazy re-exports, is on top)."""


# ---------------------------------------------------------------- what really loads


@pytest.fixture(scope="module")
def loaded_by() -> dict[str, set[str]]:
    """For each package checked: the preadapt modules a fresh interpreter holds after importing it
    alone (the interpreters run side by side)."""
    modules = [*LOWER, "preadapt.experiment", "preadapt"]
    code = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'preadapt')))")
    started = {module: subprocess.Popen([sys.executable, "-c", code, module], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for module in modules}
    loaded = {}
    for module, process in started.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"import {module} failed: {err}"
        loaded[module] = set(json.loads(out))
    return loaded


def loaded_above(loaded: set[str], packages: list[str]) -> list[str]:
    return sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.mark.parametrize("module", LOWER)
def test_a_lower_package_imported_alone_loads_no_higher_layer(module, loaded_by):
    assert loaded_above(loaded_by[module], HIGHER) == [], f"importing {module} loads a higher layer"


def test_experiment_imported_alone_loads_neither_report_nor_cli(loaded_by):
    assert loaded_above(loaded_by["preadapt.experiment"], ["preadapt.report", "preadapt.api", "preadapt.cli"]) == []


def test_the_package_itself_is_lazy_and_every_public_name_resolves(loaded_by):
    assert loaded_by["preadapt"] == {"preadapt"}
    import preadapt

    assert all(getattr(preadapt, name) is not None for name in preadapt.__all__)
    assert {"run", "run_sweep", "evaluate", "load_config", "register_world", "register_encoder",
            "register_objective", "Objective"} <= set(preadapt.__all__) <= set(dir(preadapt))
    assert preadapt.report.html.write_report is not None  # subpackages are attributes too, as before


def test_the_public_run_and_run_sweep_are_those_of_the_api_module():
    import preadapt
    from preadapt.api import run, run_sweep

    assert preadapt.run is run and preadapt.run_sweep is run_sweep
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        preadapt.no_such_name


# ---------------------------------------------------------------- what the source imports


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def imports_of(module: str) -> list[tuple[int, str, list[str]]]:
    """Every import statement of ``module`` (at any depth, not under TYPE_CHECKING) of a preadapt
    module: (line, the module imported, the names taken from it)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found: list[tuple[int, str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names
                         if alias.name.split(".")[0] == "preadapt")
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module)
            if target.split(".")[0] == "preadapt":
                found.append((node.lineno, target, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def edges_of(module: str) -> set[str]:
    """The modules ``module`` imports: ``from pkg import sub`` is an edge to ``pkg.sub`` when that is
    a module, and to ``pkg`` otherwise (an edge to ``pkg`` runs its ``__init__``)."""
    edges = set()
    for _, target, names in imports_of(module):
        submodules = [f"{target}.{name}" for name in names if f"{target}.{name}" in MODULES]
        edges.update(submodules)
        if not names or len(submodules) < len(names):
            edges.add(target)
    edges.discard(module)
    return {edge for edge in edges if edge in MODULES}


def layer_of(module: str) -> int:
    return LAYER[".".join(module.split(".")[:2])]


def test_no_module_imports_a_higher_layer_not_even_inside_a_function():
    upward = [f"{module}:{line} imports {target}" for module in MODULES for line, target, _ in imports_of(module)
              if layer_of(target) > layer_of(module)]
    assert upward == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_strongly_connected_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]


def test_no_import_cycles_between_modules():
    graph = {module: edges_of(module) for module in MODULES}
    assert strongly_connected(graph) == []


def test_no_private_name_is_imported_from_another_module():
    private = [f"{module}:{line} imports {name} from {target}" for module in MODULES
               for line, target, names in imports_of(module) for name in names
               if name.startswith("_") and not name.startswith("__")]
    assert private == []


def test_names_moved_down_a_layer_stay_importable_where_they_were():
    from preadapt.experiment import errors, selector
    from preadapt.experiment.config import ConfigError
    from preadapt.experiment.sweep import Selector, parse_selector
    from preadapt.objectives import base
    from preadapt.objectives.curl import Encoded, encode_tuples

    assert ConfigError is errors.ConfigError and (Selector, parse_selector) == (selector.Selector, selector.parse_selector)
    assert (Encoded, encode_tuples) == (base.Encoded, base.encode_tuples)
