"""The package's imports follow the flow: tokenizer → data → model → training / evaluation / inference → recipes,
serving → cli. Every import is checked, function-level ones included, since a lazy import is still an arrow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gpt1"

# Which parts of gpt1 each part may import (a part: a top-level module or subpackage). Anything not listed is an
# arrow against the flow.
ALLOWED = {
    "config": set(),
    "runtime": set(),
    "hub": set(),
    "kernels": set(),
    "checkpoint": {"config", "hub"},
    "tokenizer": {"hub"},
    "model": {"config", "kernels", "checkpoint"},
    "loading": {"config", "checkpoint", "hub", "model", "tokenizer", "runtime"},
    "data": {"tokenizer", "runtime"},
    "inference": {"model", "runtime", "config", "tokenizer"},
    "evaluation": {"data", "model", "runtime", "config", "tokenizer", "loading", "inference"},
    "training": {"model", "runtime", "config", "data", "checkpoint", "loading", "evaluation", "kernels"},
    "recipes": {
        "config", "runtime", "hub", "checkpoint", "tokenizer", "model", "loading", "data", "inference", "evaluation",
        "training", "kernels",
    },
    "serving": {"inference", "model", "loading", "runtime", "config", "tokenizer"},
    # lm-evaluation-harness's model "gpt1" and the task pack: gpt1's loading, scoring, decoding, readers and metrics.
    "lm_eval": {"loading", "inference", "evaluation", "data", "model", "runtime", "config", "tokenizer"},
    "cli": {
        "config", "runtime", "hub", "checkpoint", "tokenizer", "model", "loading", "data", "inference", "evaluation",
        "training", "recipes", "serving", "kernels", "lm_eval",
    },
}  # fmt: skip
# The one arrow up, on purpose: `GPT.generate` is transformers' name for `gpt1.generate(model, ...)`, so users of
# either API find it; the import happens when it is called, and the inference modules import the model only for
# type hints, so no cycle runs.
EXCEPTIONS = {("gpt1.model.gpt", "gpt1.inference.generate")}
# Third-party packages a part may not import even lazily: the tokenizer stays free of torch, kernels of all but
# torch and numpy.
FORBIDDEN_EXTERNAL = {"tokenizer": {"torch"}}
KERNEL_EXTERNAL = {"torch", "numpy"}


def module_name(path: Path) -> str:
    parts = ["gpt1", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """Every module (gpt1 or external top-level) that `path` imports, with line numbers."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # Imports under `if TYPE_CHECKING:` never run; they serve type hints only.
    hints_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in hints_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from gpt1.x import y` imports the module gpt1.x.y when y is one, else a name defined in gpt1.x
            submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            found += [(m, node.lineno) for m in submodules]
            if len(submodules) < len(node.names):
                found.append((target, node.lineno))
    return found


def part_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def edges() -> dict[str, list[tuple[str, int]]]:
    modules = all_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def test_no_import_goes_against_the_flow():
    bad = []
    for importer, targets in edges().items():
        part = part_of(importer)
        if part in ("", "__main__"):
            continue
        for target, line in targets:
            top = target.split(".")[0]
            if top == "gpt1":
                other = part_of(target)
                if other == "":
                    bad.append(f"{importer}:{line} imports the top-level gpt1 package; import the module itself")
                elif other != part and other not in ALLOWED[part] and (importer, target) not in EXCEPTIONS:
                    bad.append(f"{importer}:{line} imports {target} ({part} may not import {other})")
            elif part == "kernels" and top not in KERNEL_EXTERNAL and not _stdlib(top):
                bad.append(f"{importer}:{line} imports {target}: kernels use only torch, numpy and the stdlib")
            elif top in FORBIDDEN_EXTERNAL.get(part, ()):
                bad.append(f"{importer}:{line} imports {target}, which {part} must not need")
    assert not bad, "\n".join(bad)


def test_every_part_is_known():
    parts = {part_of(m) for m in all_modules()} - {"", "__main__"}
    assert parts <= set(ALLOWED), f"add {sorted(parts - set(ALLOWED))} to ALLOWED with the parts it may import"


def test_no_import_cycle():
    nodes = set(all_modules())
    graph = {m: {t for t, _ in targets if t in nodes and t != m} for m, targets in edges().items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"


def test_every_public_name_resolves():
    import gpt1

    missing = [name for name in gpt1.__all__ if getattr(gpt1, name, None) is None]
    assert not missing, f"gpt1.__all__ names that do not resolve: {missing}"
