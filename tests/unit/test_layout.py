"""The tree's shape, checked: module sizes, which package may import what, one vocabulary for a server's life.

These are the rules of docs/architecture.md ("Layout") and CONVENTIONS.md (C1, C6, C8, C9) made executable, so
that a change breaking one fails here with the file and line to look at.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fleethub"
MAX_LINES = 800
SERVICES = ("auth", "api", "spawner", "proxy", "culler")
BUS = PACKAGE / "shared" / "bus"
LIFECYCLE = PACKAGE / "shared" / "lifecycle.py"
MIGRATIONS = PACKAGE / "shared" / "db" / "migrations"
STATUS_WORDS = {"pending", "running", "stopping", "stopped", "failed"}


def _modules(top: Path) -> Iterator[Path]:
    yield from sorted(p for p in top.rglob("*.py") if ".venv" not in p.parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every absolute module name `path` imports, with its line (`from a import b` counts as `a.b`: b may be a
    module)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("fleethub", "fleethub.services"):
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"
            else:
                yield node.lineno, node.module


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_no_module_over_800_lines() -> None:
    too_long = [f"{p.relative_to(ROOT)}: {n} lines" for top in (PACKAGE, ROOT / "tests", ROOT / "bench")
                for p in _modules(top) if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not too_long, f"split these (C8, at most {MAX_LINES} lines):\n" + "\n".join(too_long)


def test_one_top_level_package() -> None:
    """An installed fleethub is one package: nothing else of ours sits at the top of the tree as a package."""
    stray = [p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()
             and p.name not in ("fleethub", "tests")]
    assert not stray, f"top-level packages besides fleethub: {stray}"


def test_no_service_imports_another_service() -> None:
    found = []
    for own in SERVICES:
        for path in _modules(PACKAGE / "services" / own):
            for line, name in _imports(path):
                parts = name.split(".")
                if parts[:2] == ["fleethub", "services"] and len(parts) > 2 and parts[2] != own:
                    found.append(f"{_where(path, line)} imports {name}")
    for path in [*_modules(PACKAGE / "shared"), PACKAGE / "cli.py", PACKAGE / "up.py"]:
        for line, name in _imports(path):
            if name.startswith("fleethub.services"):
                found.append(f"{_where(path, line)} imports {name}")
    assert not found, "a service's package is its own (put what two share in fleethub/shared/):\n" + "\n".join(found)


def test_only_the_bus_package_imports_nats() -> None:
    found = [f"{_where(path, line)} imports {name}" for path in _modules(PACKAGE)
             if BUS not in path.parents for line, name in _imports(path) if name.split(".")[0] == "nats"]
    assert not found, "NATS is wrapped by fleethub/shared/bus/ alone (C6):\n" + "\n".join(found)
    assert any(name == "nats" for _, name in _imports(BUS / "connection.py"))  # the scan does see one


def _field_names(tree: ast.AST) -> set[int]:
    """Ids of the string constants that name JSON fields rather than being values: dict keys, subscripts, and
    the contents of `*_FIELDS` tables (JupyterHub's models have fields called `pending` and `stopped`)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            out |= {id(k) for k in node.keys if k is not None}
        elif isinstance(node, ast.Subscript):
            out.add(id(node.slice))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id.endswith("_FIELDS") for t in targets) and node.value:
                out |= {id(n) for n in ast.walk(node.value)}
    return out


def test_server_statuses_are_spelled_only_in_the_lifecycle_module() -> None:
    found = []
    for path in _modules(PACKAGE):
        if path == LIFECYCLE or MIGRATIONS in path.parents:  # migrations are frozen history
            continue
        tree = ast.parse(path.read_text(), str(path))
        names = _field_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in STATUS_WORDS and id(node) not in names:
                found.append(f"{_where(path, node.lineno)}: {node.value!r}")
    assert not found, "use ServerStatus / DesiredState (fleethub/shared/lifecycle.py):\n" + "\n".join(found)


def test_init_modules_hold_only_a_docstring_and_re_exports() -> None:
    found = []
    for path in _modules(PACKAGE):
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            dunder = isinstance(node, ast.Assign) and all(
                isinstance(t, ast.Name) and t.id in ("__all__", "__version__") for t in node.targets)
            if not (docstring or dunder or isinstance(node, ast.Import | ast.ImportFrom)):
                found.append(_where(path, node.lineno))
    assert not found, "__init__.py is a table of contents (C9):\n" + "\n".join(found)


def test_every_service_has_the_skeleton() -> None:
    skeleton = ("__init__.py", "__main__.py", "app.py")
    missing = [f"fleethub/services/{svc}/{name}" for svc in SERVICES for name in skeleton
               if not (PACKAGE / "services" / svc / name).exists()]
    assert not missing, f"C1 skeleton: {missing}"
