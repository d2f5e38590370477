"""The package's import graph: no cycles between modules, lazy imports inside functions included, and decoding
below evaluate."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "presrm"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p) for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, *, top_level: bool) -> set[str]:
    """The presrm modules ``path`` imports; ``from presrm.x import y`` counts ``presrm.x.y`` when that is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("presrm"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names} & MODULES
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("presrm")}
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path that starts and ends at the same module, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        for dep in sorted(graph.get(node, ())):
            found = visit(dep, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_even_through_lazy_imports():
    graph = {_module(p): _imports(p, top_level=False) for p in PACKAGE.rglob("*.py")}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
    assert "presrm.decoding" in graph["presrm.evaluate"]  # the premise of the next test: evaluate builds on decoding


def test_decoding_and_grading_never_import_evaluate():
    for name in ("decoding.py", "grading.py", "search.py", "engines/base.py", "engines/hf.py", "engines/vllm.py"):
        assert "presrm.evaluate" not in _imports(PACKAGE / name, top_level=False), name
