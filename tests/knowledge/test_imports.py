"""Importing the knowledge layer or the vector-store interface imports no store driver and
no optional parser or model library."""

import subprocess
import sys

import pytest

HEAVY = ["psycopg", "psycopg_pool", "sqlalchemy", "pypdf", "sentence_transformers", "torch", "numpy"]


@pytest.mark.parametrize("module", ["agentkeep.vector_db", "agentkeep.vector_db.in_memory", "agentkeep.knowledge"])
def test_imports_stay_light(module):
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {module} also imported: {out}"


def test_pgvector_imports_no_pgvector_package():
    code = "import sys, agentkeep.vector_db.pgvector; print('pgvector' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
