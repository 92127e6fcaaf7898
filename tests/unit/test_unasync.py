"""The sync twins (the domain layer, the SQL, MongoDB and Redis kernels) are generated from
their async sources; they must never drift."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_sync_domain_is_current():
    result = subprocess.run([sys.executable, "scripts/unasync.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_files_have_no_async_left():
    twins = sorted((ROOT / "agentkeep/db").rglob("_sync/*.py"))
    assert {p.relative_to(ROOT).as_posix() for p in twins} >= {
        "agentkeep/db/_sync/domain.py", "agentkeep/db/backends/sql/_sync/kernel.py",
        "agentkeep/db/backends/mongo/_sync/kernel.py", "agentkeep/db/backends/redis/_sync/kernel.py"}
    for path in twins:
        text = path.read_text()
        assert "await " not in text and "async def" not in text, path
