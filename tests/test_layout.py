"""The package's house: one subpackage per stage, imports pointing down the floors only, no module
over 400 lines, at most three modules at the package root. Read from the code's own imports."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "pika_utils"
#: The floors, lowest first: a subpackage imports only from floors below its own.
FLOORS = [{"core"}, {"grading", "models"}, {"problems", "activations"}, {"generation", "probes"},
          {"routing", "backtracking", "recoverability", "coding"}, {"book"}, {"cli"}]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def _stage(module_path: Path) -> str:
    rel = module_path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_stages(path: Path) -> set[str]:
    """The stages a module imports from (relative imports resolved against its folder)."""
    here = path.relative_to(PKG).parent.parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:len(here) - (node.level - 1)]) + (node.module.split(".") if node.module else [])
                parts = base or [a.name for a in node.names]
            elif (node.module or "").startswith("pika_utils."):
                parts = node.module.split(".")[1:]
            else:
                continue
            out.update([parts[0]] if parts else [])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("pika_utils."))
    return out


def test_imports_point_down_the_floors():
    up = []
    for path in PKG.rglob("*.py"):
        stage = _stage(path)
        if path.parent == PKG and path.name == "__init__.py":
            continue
        assert stage in FLOOR, f"{path.relative_to(PKG)}: stage {stage!r} is on no floor (add it to FLOORS)"
        for other in _imported_stages(path) - {stage}:
            if FLOOR.get(other, 99) >= FLOOR[stage]:
                up.append(f"{path.relative_to(PKG)} imports {other}")
    assert not up, "imports that do not point down: " + "; ".join(sorted(up))


def test_module_sizes_and_the_package_root():
    big = [f"{p.relative_to(PKG)} ({n})" for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400]
    assert not big, f"modules over 400 lines: {big}"
    root = sorted(p.name for p in PKG.glob("*.py"))
    assert len(root) <= 3, f"modules at the package root: {root}"
    for sub in (p for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((sub / "__init__.py").read_text()))
        assert doc and "Imports" in doc, f"{sub.name}/__init__.py must say what it holds and what it may import"
