"""The sync domain layer is generated from the async source; it must never drift."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_sync_domain_is_current():
    result = subprocess.run([sys.executable, "scripts/unasync.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_file_has_no_async_left():
    text = (ROOT / "agentkeep/db/_sync/domain.py").read_text()
    assert "await " not in text and "async def" not in text
