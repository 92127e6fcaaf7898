"""Importing one backend imports no other backend's driver."""

import subprocess
import sys

import pytest

CASES = {
    "agentkeep.db": ["sqlalchemy", "fsspec", "filelock"],
    "agentkeep.db.in_memory": ["sqlalchemy", "fsspec"],
    "agentkeep.db.sqlite": ["fsspec", "filelock"],
    "agentkeep.db.json": ["sqlalchemy"],
}


@pytest.mark.parametrize("module", list(CASES))
def test_backend_imports_only_its_driver(module):
    code = f"import sys, {module}; print(' '.join(m for m in {CASES[module]!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {module} also imported: {out}"
