"""Generate the sync twins (domain layer, kernels) from their async sources, so the twins
cannot drift: every `_async/` folder under agentkeep/db (the domain's, and each backend
family's that has one) and under agentkeep/agent (the run loop) has a `_sync/` sibling
generated from it.

    python scripts/unasync.py          # rewrite every _sync/*.py
    python scripts/unasync.py --check  # exit 1 when a generated file is stale (CI)

Every `_async/*.py` except `__init__.py` and `util.py` (hand-written on both sides) is a
source. A source may add its own renames with comment lines such as
`# unasync: AsyncMongoClient -> MongoClient` (whole words; the line itself is dropped from
the generated file).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (ROOT / "agentkeep/db", ROOT / "agentkeep/agent")
HAND_WRITTEN = {"__init__.py", "util.py"}
OWN_RENAME = re.compile(r"^# unasync: (\S+) -> (\S+)\n", re.MULTILINE)
REPLACEMENTS = [
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\bAsyncDb\b", "Db"),
    (r"\bAsyncSqlKernel\b", "SqlKernel"),
    (r"\basynccontextmanager\b", "contextmanager"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\b(agentkeep\.(?:db|agent)(?:\.\w+)*?)\._async\.", r"\1._sync."),
    (r"^import asyncio$", "import time"),
    (r"\basyncio\.sleep\(", "time.sleep("),
    (r"task \(thread, in the sync twin\)", "thread"),
    (r"This is the async source; `((?:\w+/)*)_sync/(\w+\.py)` is generated from it by\n`scripts/unasync.py` \(never edit the generated file\).",
     r"GENERATED from \1_async/\2 by scripts/unasync.py: do not edit."),
]


def convert(text: str) -> str:
    own = [(rf"\b{re.escape(a)}\b", b) for a, b in OWN_RENAME.findall(text)]
    text = OWN_RENAME.sub("", text)
    for pattern, repl in REPLACEMENTS + own:
        text = re.sub(pattern, repl, text, flags=re.MULTILINE)
    return text


def pairs() -> list[tuple[Path, Path]]:
    """(async source, generated twin) of every source."""
    return [
        (src, src.parent.parent / "_sync" / src.name)
        for package in PACKAGES
        for folder in sorted(package.rglob("_async"))
        for src in sorted(folder.glob("*.py"))
        if src.name not in HAND_WRITTEN
    ]


def main(check: bool) -> int:
    stale = []
    for src, target in pairs():
        out = convert(src.read_text())
        if check:
            if not target.exists() or target.read_text() != out:
                stale.append(str(target.relative_to(ROOT)))
        else:
            target.write_text(out)
    if stale:
        print("stale generated files (run python scripts/unasync.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv))
