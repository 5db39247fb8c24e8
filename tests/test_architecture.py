"""The shape of the code (issue 11, DESIGN.md section 2): imports point down, files stay small.

The import graph is read from the source (every ``import`` and ``from ... import``,
including those inside functions, since a lazy import is still a dependency), leaving out
imports under ``if TYPE_CHECKING:`` (type hints only, never executed). A module's import of
an ancestor package (``from . import X`` in a package's own module) is the package
re-exporting its children, not a dependency between concepts, and is not an arrow here.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "unclip"
INFERENCE = (
    "unclip.pipeline", "unclip.adapters", "unclip.manipulate", "unclip.diffusion", "unclip.prior", "unclip.decoder",
    "unclip.upsampler", "unclip.clip", "unclip.nn", "unclip.model_dir", "unclip.storage",
)  # fmt: skip
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return skipped


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The unclip modules that module ``name`` imports."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("unclip") and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_inference_never_imports_training_or_applications():
    bad = [
        f"{src} -> {dst}"
        for src, dsts in _graph().items()
        for dst in dsts
        if any(_inside(src, p) for p in INFERENCE) and (_inside(dst, "unclip.train") or _inside(dst, "unclip.apps"))
    ]
    assert not bad, bad


def test_nothing_outside_the_applications_imports_them():
    bad = [
        f"{src} -> {dst}"
        for src, dsts in _graph().items()
        for dst in dsts
        if _inside(dst, "unclip.apps") and not _inside(src, "unclip.apps") and src != "unclip.__main__"
    ]
    assert not bad, bad


def test_the_graph_reader_sees_real_arrows():
    """Guards the test itself: known arrows are found, and TYPE_CHECKING imports are not."""
    graph = _graph()
    assert "unclip.manipulate" in graph["unclip.pipeline.base"] and "unclip.pipeline.karlo" in graph["unclip.pipeline"]
    assert "unclip.train.budget" in graph["unclip.train.components"]
    assert "unclip.train.loop" in graph["unclip.train.budget"]
    assert "unclip.pipeline" not in graph["unclip.manipulate.invert"]  # only under TYPE_CHECKING


def test_no_file_is_over_the_size_limit():
    over = {
        str(p.relative_to(SRC)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not over, f"files over {MAX_LINES} lines: {over}"
