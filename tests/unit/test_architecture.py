"""The shape rules of STYLE.md, enforced: one-way imports, names that say where code runs."""
import ast
import importlib
import pathlib

import pytest
from numba.core.registry import CPUDispatcher

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAYERS = ("kernels", "daemon", "transport", "persistence", "analytics")
# who may import whom (inside the project); kernels: nobody
ALLOWED = {
    "kernels": set(),
    "transport": {"kernels"},
    "persistence": {"kernels"},
    "analytics": {"kernels"},
    "daemon": {"kernels", "transport", "persistence", "analytics"},
}
# llvmlite is Numba's own code generator: the intrinsics (fence, prefetch) emit LLVM IR with it
KERNEL_THIRD_PARTY = {"numpy", "numba", "llvmlite"}


def modules(layer):
    return sorted((ROOT / layer).rglob("*.py"))


def imports_of(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_run_one_way(layer):
    for path in modules(layer):
        for name, level in imports_of(path):
            if level:  # relative: stays inside its own layer
                continue
            parts = name.split(".")
            if parts[0] == "portfolio_state":
                target = parts[1]
                assert target == layer or target in ALLOWED[layer], f"{path.relative_to(ROOT)} imports {name}"
            elif layer == "kernels":
                import sys

                assert parts[0] in KERNEL_THIRD_PARTY or parts[0] in sys.stdlib_module_names, (
                    f"{path.relative_to(ROOT)} imports {name}: kernels import only numpy, numba and themselves")


def test_every_module_says_what_it_owns():
    for layer in LAYERS:
        for path in modules(layer):
            assert ast.get_docstring(ast.parse(path.read_text())), f"{path.relative_to(ROOT)} has no docstring"


def test_no_async_in_kernels():
    for path in modules("kernels"):
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, ast.AsyncFunctionDef) for n in ast.walk(tree)), path


def test_jitted_functions_are_named_nb():
    for path in modules("kernels"):
        mod = importlib.import_module(f"portfolio_state.kernels.{path.stem}") if path.stem != "__init__" else None
        if mod is None:
            continue
        for name, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == mod.__name__:
                assert name.endswith("_nb"), f"{mod.__name__}.{name} is jitted but not named *_nb"
