"""The import graph of slimkit, read from the source (every import statement, function-local ones included):
no module may reach itself again through imports, the core imports no technique, and techniques use each other
only through their packages' public ``__init__``."""
import ast
from pathlib import Path

import slimkit

SRC = Path(slimkit.__file__).parent.parent


def modules() -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package's __init__)} of every module of slimkit."""
    out = {}
    for path in (SRC / "slimkit").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def imports(mods: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """{module: the slimkit modules its import statements name}; ``from P import name`` names P.name when that
    is a module, else P."""
    def owner(name: str) -> str:
        while name not in mods:
            name = name.rsplit(".", 1)[0]
        return name

    graph = {}
    for name, (path, package) in mods.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {owner(a.name) for a in node.names if a.name.split(".")[0] == "slimkit"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if package else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                if base.split(".")[0] == "slimkit":
                    targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else owner(base) for a in node.names}
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_not_even_through_function_local_imports():
    graph = imports(modules())
    assert {"slimkit.measure.latency", "slimkit.runtime", "slimkit.compile.backends"} <= set(graph)  # it read the tree
    assert "slimkit.runtime.onnxruntime" in graph["slimkit.measure.latency"] | graph["slimkit.runtime"]
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_through_a_local_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


CORE = {"recipe", "pipeline", "models", "data", "measure", "runtime", "report", "train", "graph", "files", "errors",
        "version", "devices", "recipes"}
TECHNIQUES = {"prune", "quantize", "distill", "lowrank", "cluster", "arch", "search", "compile", "spaces"}
APPLICATION = {"slimkit", "slimkit.cli", "slimkit.__main__"}  # the package root and the CLI may import anything


def layering_breaks(graph: dict[str, set[str]]) -> list[str]:
    """Imports from the core into a technique, and from one technique into another's modules (not its package)."""
    def floor(module: str) -> str:
        return module.split(".")[1]

    breaks = []
    for module, targets in sorted(graph.items()):
        if module in APPLICATION:
            continue
        for target in sorted(targets - APPLICATION):
            here, there = floor(module), floor(target)
            assert here in CORE | TECHNIQUES and there in CORE | TECHNIQUES, f"put {module} or {target} on a floor"
            if here in CORE and there in TECHNIQUES:
                breaks.append(f"core {module} imports technique {target}")
            elif here in TECHNIQUES and there in TECHNIQUES and here != there and target != f"slimkit.{there}":
                breaks.append(f"{module} imports {target}, not the public slimkit.{there}")
    return breaks


def test_the_core_imports_no_technique_and_techniques_meet_only_through_their_packages():
    assert layering_breaks(imports(modules())) == []


def test_the_layering_check_sees_a_break():
    graph = {"slimkit.train": {"slimkit.prune.masks"}, "slimkit.search.policy": {"slimkit.prune", "slimkit.prune.channel"},
             "slimkit.cli": {"slimkit.prune.channel"}}
    assert layering_breaks(graph) == ["slimkit.search.policy imports slimkit.prune.channel, not the public slimkit.prune",
                                      "core slimkit.train imports technique slimkit.prune.masks"]
