"""The sync forms of `agentkeep/db/_async/util.py`."""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")


def to_thread(fn: Callable[[], T]) -> T:
    return fn()


def gate() -> threading.Lock:
    return threading.Lock()
