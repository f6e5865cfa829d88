"""The package's shape (issue 23): a static import graph of hvdweather/ without a cycle, function-level
imports included (a deferred import that hid a cycle counts as one). Before the restructuring this found
five: elastic/train, the scaling, EDA and models benchmarks with their reports, and the EDA executors
with the Spark executor."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "hvdweather"


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """Every hvdweather module `tree` imports, at any depth (module level or inside a function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    modules = module_names()
    # A package's own __init__ is not an edge back: importing hvdweather.x.y runs hvdweather.x first anyway.
    edges = {name: {other for other in imported(ast.parse(path.read_text()), modules)
                    if other != name and not name.startswith(other + ".")}
             for name, path in modules.items()}
    assert len(modules) > 50 and sum(map(len, edges.values())) > 100  # the graph was really read
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


MAX_PARAMETERS = 6
MAX_LINES = 300
LONG_REASON = "Over 300 lines because"


def public_functions(tree: ast.AST) -> list[tuple[str, int]]:
    """(name, parameter count) of every public function and method, self/cls not counted. A click
    command that takes **flags counts its named parameters only: its options build a dataclass."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
            found.append((node.name, len(names) - (names[:1] in (["self"], ["cls"]))))
    return found


def test_no_public_function_takes_more_than_six_parameters():
    """Issue 23: state passed by hand (fit took 9 parameters) goes into a context or spec dataclass."""
    modules = module_names()
    too_many = [f"{name}.{function} ({count})" for name, path in sorted(modules.items())
                for function, count in public_functions(ast.parse(path.read_text())) if count > MAX_PARAMETERS]
    assert too_many == []


def test_long_modules_say_why():
    """A module over 300 lines states why in its docstring; the rest are split by concern."""
    unexplained = []
    for name, path in sorted(module_names().items()):
        lines = path.read_text().count("\n")
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and LONG_REASON not in docstring:
            unexplained.append(f"{name} ({lines} lines)")
    assert unexplained == []


def test_the_scans_see_what_they_look_for():
    tree = ast.parse("def f(a, b, c, d, e, f, g): pass\nclass A:\n    def m(self, a): pass\n"
                     "def _hidden(a, b, c, d, e, f, g, h): pass\n")
    assert public_functions(tree) == [("f", 7), ("m", 1)]
