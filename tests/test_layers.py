"""Layers point one way: models <- data <- training / inference <- cli / ui.

Every ``import`` in the package, at module level or inside a function, is parsed with ``ast`` and
must reach a lower layer or its own package. Same-layer peers stay apart (training and inference,
cli and ui), so the app and the command line share the library, not each other.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lesionseg"

# module prefix -> layer; the longest matching prefix decides
LAYERS: dict[str, float] = {
    "lesionseg": -1, "lesionseg.utils": -1,  # the package's __init__ (its version); file, size, device and CPU-ISA helpers
    "lesionseg.losses": 0, "lesionseg.metrics": 0, "lesionseg.postprocess": 0,
    "lesionseg.measurements": 0, "lesionseg.operating_points": 0, "lesionseg.hub": 0, "lesionseg.clicks": 0,
    "lesionseg.models": 1,
    "lesionseg.data": 2,
    "lesionseg.training": 3, "lesionseg.inference": 3,
    "lesionseg.evaluation": 3.5, "lesionseg.evaluation_clicks": 3.5,  # scoring a Predictor (plain, with clicks)
    "lesionseg.reporting": 3.6,  # and its report
    "lesionseg.cli": 4, "lesionseg.ui": 4,
    "lesionseg.__main__": 5,
}


def layer_of(module: str) -> tuple[str, float]:
    """(the LAYERS key, its layer) for a dotted module name inside the package."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key, LAYERS[key]
    raise KeyError(f"{module}: not in LAYERS (add the new module to this test's table)")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import of the package in ``source``."""
    out = []
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[:len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from . import session" imports a module: judge each name as one
            out += [(node.lineno, f"{target}.{a.name}" if not node.module else target) for a in node.names]
    return sorted({(line, m) for line, m in out if m == "lesionseg" or m.startswith("lesionseg.")})


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    key, layer = layer_of(module)
    bad = []
    for line, target in imported_modules(source, module, is_package):
        t_key, t_layer = layer_of(target)
        if t_key != key and not t_layer < layer:
            bad.append(f"{module}:{line} imports {target} (layer {t_layer:g} from layer {layer:g})")
    return bad


def test_no_module_imports_a_layer_above_or_beside_it() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        bad += violations(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


@pytest.mark.parametrize("source, module", [
    ("from ..ui.views import fit_size\n", "lesionseg.inference.batch"),          # inference -> ui
    ("def f():\n    from ..cli.common import error\n", "lesionseg.ui.handlers"),  # a peer, inside a function
    ("import lesionseg.inference.predictor\n", "lesionseg.data.io"),              # data -> inference
    ("from .. import training\n", "lesionseg.inference.predictor"),               # peer package by name
])
def test_the_check_sees_each_kind_of_upward_import(source: str, module: str) -> None:
    assert violations(source, module)


def test_the_check_allows_downward_and_own_package_imports() -> None:
    ok = "from ..data.io import load_image\nfrom .prediction import Prediction\nimport lesionseg.models\n"
    assert violations(ok, "lesionseg.inference.predictor") == []
