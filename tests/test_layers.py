"""`make lint` enforces the layering of STYLE.md §6: a copy of the package with one bad import fails lint-imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, cwd=package_parent, env=environment, timeout=120,
                          check=False)


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    if not LINT_IMPORTS.exists():
        pytest.skip("lint-imports is not installed (pip install -e '.[test]')")
    shutil.copytree(ROOT / "engaged", tmp_path / "engaged", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_package_as_it_is_keeps_every_contract(package_copy: Path) -> None:
    result = lint_imports(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("engaged/smtp/replies.py", "import engaged.delivery.queue", "never reaches delivery"),
        ("engaged/inject.py", "import engaged.smtp.replies", "knows no SMTP text"),
        ("engaged/rewrite/html.py", "import engaged.spool.store", "Pure cores"),
        ("engaged/spool/record.py", "import engaged.delivery.queue", "Inner rooms never import outer ones"),
        ("engaged/api/asgi.py", "import engaged.web.middleware", "Inner rooms never import outer ones"),
        ("engaged/web/feed.py", "import sqlite3", "Only the stores touch SQL"),
        ("engaged/suppression/rules.py", "import asyncpg", "Only the stores touch SQL"),
        ("engaged/web/queries.py", "import engaged.events.store_sqlite", "only through its protocols"),
        ("engaged/events/query.py", "import engaged.delivery.queue", "Inner rooms never import outer ones"),
        ("engaged/bus/stream.py", "import engaged.inject", "Inner rooms never import outer ones"),
        ("engaged/suppression/check.py", "import engaged.smtp.replies", "Inner rooms never import outer ones"),
        ("engaged/suppression/rules.py", "import engaged.web.routes", "Inner rooms never import outer ones"),
        ("engaged/inbound/processor.py", "import engaged.api.asgi", "Inner rooms never import outer ones"),
        ("engaged/verp.py", "import engaged.inbound.processor", "Inner rooms never import outer ones"),
        ("engaged/server/sockets.py", "import engaged.app", "Inner rooms never import outer ones"),
        ("engaged/app.py", "import engaged.server.supervisor", "Inner rooms never import outer ones"),
        ("engaged/smtp/handler.py", "import engaged.testing.sink", "Inner rooms never import outer ones"),
    ],
)
def test_one_bad_import_breaks_its_contract(package_copy: Path, module: str, bad_import: str, contract: str) -> None:
    path = package_copy / module
    path.write_text(path.read_text() + f"\n{bad_import}  # noqa\n")
    result = lint_imports(package_copy)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout


def test_every_module_of_every_room_sits_in_a_layer() -> None:
    """A room (a subpackage) split across layers lists each module, so a new one cannot slip in unlisted."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (layers,) = [contract["layers"] for contract in config["tool"]["importlinter"]["contracts"]
                 if contract["type"] == "layers"]
    listed = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    package = ROOT / "engaged"
    modules = [".".join(("engaged", *path.relative_to(package).with_suffix("").parts))
               for path in package.glob("*/*.py") if path.name != "__init__.py"]
    unlisted = [module for module in modules
                if not any(module == name or module.startswith(name + ".") for name in listed)]
    assert modules
    assert not unlisted, f"add to a layer of [tool.importlinter]: {unlisted}"
