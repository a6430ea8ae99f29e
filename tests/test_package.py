"""The package as users import it: ``import crowdsort``, its public API, and a layout of
subpackages with no import circle (issue 29)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import crowdsort

PACKAGE = Path(crowdsort.__file__).parent


def test_every_public_name_resolves():
    for name in crowdsort.__all__:
        assert getattr(crowdsort, name) is not None, name
    assert crowdsort.ReviewApp.__module__ == "crowdsort.review.app"


def test_import_is_light():
    """``import crowdsort`` loads no model runtime, dashboard or dataframe library."""
    code = ("import sys, crowdsort; heavy = ('numpy', 'pandas', 'onnxruntime', 'panel', 'torch', 'ray', 'av'); "
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _imports() -> dict[str, set[str]]:
    """Each module of the package (dotted) → the package modules it imports, lazy imports too."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        name = ".".join(["crowdsort", *(parts[:-1] if is_init else parts)])
        package = name if is_init else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("crowdsort"):
                    # "from . import x" names a module when x is one
                    named = [f"{target}.{a.name}" for a in node.names]
                    deps.update(n for n in named if _is_module(n)) if not node.module else deps.add(target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("crowdsort"))
        graph[name] = deps - {name, "crowdsort"}
    return graph


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_between_modules_or_subpackages():
    graph = _imports()
    assert len(graph) > 40 and "crowdsort.faces.embed" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))

    def part(module: str) -> str:  # a subpackage, or a top-level module on its own
        return ".".join(module.split(".")[:2])
    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        packages.setdefault(part(module), set()).update(part(d) for d in deps if part(d) != part(module))
    assert _cycle(packages) is None, " -> ".join(_cycle(packages))
