"""The package's layers point one way, and no private name crosses a module boundary.

cli → bench → methods → problems (and the other users of the loop) → solve → solvers →
problem/result → priors → operators → data and the numerical basics. Every import in
``invdiff/`` — at module level or inside a function — is parsed and checked.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "invdiff"

#: lowest layer first; a module may import from its own layer or below
LAYERS = [
    ("invdiff.data", "invdiff.validation", "invdiff.linalg", "invdiff.schedules", "invdiff.metrics", "invdiff.plot",
     "invdiff.calibration", "invdiff.threads", "invdiff.devices"),
    ("invdiff.operators",),
    ("invdiff.priors",),
    ("invdiff.problem", "invdiff.result"),
    ("invdiff.solvers",),
    ("invdiff.solve",),
    ("invdiff.problems", "invdiff.reference", "invdiff.train", "invdiff.sampling", "invdiff.reconstructor",
     "invdiff.measurements"),
    ("invdiff.methods",),
    ("invdiff.bench", "invdiff.distributed"),
    ("invdiff.cli", "invdiff.solve_cli", "invdiff.demo", "invdiff.__main__"),
]


def _rank(module: str) -> int | None:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), is_pkg, path


def _imports(module: str, is_pkg: bool, path: Path):
    """(imported module, imported names) for every import statement in ``path``."""
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


MODULES = list(_modules())


def test_every_module_has_a_layer():
    missing = [m for m, _, _ in MODULES if m != "invdiff" and _rank(m) is None]
    assert not missing, f"modules without a layer in tests/test_layers.py: {missing}"


@pytest.mark.parametrize("module, is_pkg, path", [m for m in MODULES if m[0] != "invdiff"],
                         ids=[m[0] for m in MODULES if m[0] != "invdiff"])
def test_no_import_from_a_layer_above(module, is_pkg, path):
    own = _rank(module)
    bad = []
    for target, names in _imports(module, is_pkg, path):
        if not target.startswith("invdiff"):
            continue
        # "from invdiff.x import y" may name a submodule y
        candidates = [target] + [f"{target}.{n}" for n in names]
        ranks = [r for r in map(_rank, candidates) if r is not None]
        if target == "invdiff":
            ranks = [r for r in map(_rank, candidates[1:]) if r is not None] or [len(LAYERS)]
        if ranks and min(ranks) > own:
            bad.append(target)
    assert not bad, f"{module} imports from layers above it: {bad}"


@pytest.mark.parametrize("module, is_pkg, path", MODULES, ids=[m[0] for m in MODULES])
def test_no_private_name_crosses_modules(module, is_pkg, path):
    bad = []
    own_package = module if is_pkg else module.rpartition(".")[0]
    for target, names in _imports(module, is_pkg, path):
        if not target.startswith("invdiff"):
            continue
        bad += [f"{target}.{n}" for n in names if n.startswith("_") and n != "__version__"]
        # a private module (invdiff.x._y) may only be used inside its own package x
        private = [p for p in target.split(".") if p.startswith("_") and p != "__init__"]
        if private:
            owner = target[: target.index("." + private[0])]
            if not (own_package == owner or own_package.startswith(owner + ".")):
                bad.append(target)
    assert not bad, f"{module} imports private names: {bad}"
