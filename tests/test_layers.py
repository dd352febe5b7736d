"""`make lint` enforces the layering of STYLE.md §6: a copy of the package with one bad import fails lint-imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
        ("engaged/web/queries.py", "import engaged.events.store_sqlite", "only through its protocols"),
    ],
)
def test_one_bad_import_breaks_its_contract(package_copy: Path, module: str, bad_import: str, contract: str) -> None:
    path = package_copy / module
    path.write_text(path.read_text() + f"\n{bad_import}  # noqa\n")
    result = lint_imports(package_copy)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout
