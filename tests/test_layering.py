"""The dependency direction of ../shared/DESIGN.md, checked on the source: comm imports
neither autograd, nn nor parallel; nn imports neither comm nor parallel; cost (which
predicts comm and parallel) imports neither parallel nor nn; inside the
package only minidist/comm imports mpi4py; `import minidist.comm` loads no autograd or
nn; and the package's module-level imports have no cycle."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minidist"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool):
    """(imported module, line) of every import in `path`, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield base, node.lineno
            for alias in node.names:  # `from . import ops` imports the submodule ops
                yield f"{base}.{alias.name}", node.lineno


def _violations(folder: str, forbidden: tuple) -> list:
    found = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for name, line in _imports(path, top_level_only=False):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    return found


@pytest.mark.parametrize("folder, forbidden", [
    ("comm", ("minidist.autograd", "minidist.nn", "minidist.parallel", "minidist.cost",
              "minidist.optim", "minidist.data", "minidist.report")),
    ("nn", ("minidist.comm", "minidist.parallel", "minidist.cost")),
    ("autograd", ("minidist.nn", "minidist.comm", "minidist.parallel")),
    ("cost", ("minidist.autograd", "minidist.nn", "minidist.parallel", "minidist.report")),
])
def test_lower_layers_do_not_import_upper_ones(folder, forbidden):
    assert _violations(folder, forbidden) == []


def test_only_comm_imports_mpi4py():
    found = [f"{p.relative_to(PACKAGE.parent)}:{line}" for p in sorted(PACKAGE.rglob("*.py"))
             if p.parent.name != "comm"
             for name, line in _imports(p, top_level_only=False) if name.split(".")[0] == "mpi4py"]
    assert found == []


def test_importing_comm_loads_no_autograd_or_nn():
    code = ("import sys, minidist.comm; "
            "print(sorted(m for m in sys.modules if m.startswith(('minidist.autograd', "
            "'minidist.nn', 'minidist.parallel', 'minidist.optim', 'minidist.data'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_module_level_imports_have_no_cycle():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        graph[_module_name(path)] = {n for n, _ in _imports(path, top_level_only=True)
                                     if n.startswith("minidist")}
    for deps in graph.values():  # keep module names only (drop imported attributes)
        deps.intersection_update(graph)
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for dep in sorted(graph[module]):
            if dep == module or dep.startswith(module + "."):
                continue  # a package importing its own submodules is not a cycle
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
