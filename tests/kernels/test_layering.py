"""kernels/ is the bottom layer: its modules import nothing of sparsecraft but errors, timing and kernels/."""
from __future__ import annotations

import ast
from pathlib import Path

import sparsecraft

PACKAGE = Path(sparsecraft.__file__).resolve().parent
ALLOWED = {"sparsecraft.kernels", "sparsecraft.errors", "sparsecraft.timing"}


def sparsecraft_imports(path: Path) -> set[str]:
    """Every sparsecraft module ``path`` imports (relative imports resolved, ``from X import y`` as X.y)."""
    package = ".".join(("sparsecraft",) + path.relative_to(PACKAGE).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found |= {f"{module}.{a.name}" for a in node.names}
    return {m for m in found if m == "sparsecraft" or m.startswith("sparsecraft.")}


def test_resolver_sees_relative_imports():
    probe = PACKAGE / "kernels" / "_native.py"
    assert "sparsecraft.errors.SparsecraftError" in sparsecraft_imports(probe)


def test_kernels_import_only_errors_timing_and_themselves():
    modules = sorted((PACKAGE / "kernels").rglob("*.py"))
    assert len(modules) >= 4
    bad = {
        str(p.relative_to(PACKAGE)): sorted(m for m in sparsecraft_imports(p)
                                            if not any(m == a or m.startswith(a + ".") for a in ALLOWED))
        for p in modules
    }
    assert {k: v for k, v in bad.items() if v} == {}
