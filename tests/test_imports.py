"""The package's import graph: no cycles between modules, and decoding below evaluate."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "presrm"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("presrm"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("presrm")}
    return out


def test_module_level_imports_form_no_cycle():
    graph = {_module(p): _imports(p, top_level=True) for p in PACKAGE.rglob("*.py")}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, "import cycle: " + " -> ".join([*path[path.index(node):], node])
        if node in done:
            return
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
    assert "presrm.decoding" in graph["presrm.evaluate"]  # the premise: evaluate builds on decoding


def test_decoding_and_grading_never_import_evaluate():
    for name in ("decoding.py", "grading.py", "search.py", "engine.py", "vllm_engine.py"):
        assert "presrm.evaluate" not in _imports(PACKAGE / name, top_level=False), name
