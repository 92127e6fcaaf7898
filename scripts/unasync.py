"""Generate the sync domain layer from the async source, so the twins cannot drift.

    python scripts/unasync.py          # rewrite agentkeep/db/_sync/*.py
    python scripts/unasync.py --check  # exit 1 when a generated file is stale (CI)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["domain.py"]
REPLACEMENTS = [
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\bAsyncDb\b", "Db"),
    (r"This is the async source; (`[^`]+`) is generated from it by\n`scripts/unasync.py` \(never edit the generated file\).",
     "GENERATED from agentkeep/db/_async/domain.py by scripts/unasync.py: do not edit."),
]


def convert(text: str) -> str:
    for pattern, repl in REPLACEMENTS:
        text = re.sub(pattern, repl, text)
    return text


def main(check: bool) -> int:
    stale = []
    for name in SOURCES:
        src = (ROOT / "agentkeep/db/_async" / name).read_text()
        target = ROOT / "agentkeep/db/_sync" / name
        out = convert(src)
        if check:
            if not target.exists() or target.read_text() != out:
                stale.append(str(target))
        else:
            target.write_text(out)
    if stale:
        print("stale generated files (run python scripts/unasync.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv))
