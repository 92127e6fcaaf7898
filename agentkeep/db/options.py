"""The arguments a db is built with, checked by its constructor before anything is opened:
a wrong type raises InvalidInputError naming the argument, an unknown keyword is refused
with the closest valid name, and a file beside a missing directory is refused (the same
check `agentkeep export` makes)."""

from __future__ import annotations

import difflib
import inspect
import math
import os
from pathlib import Path
from typing import Any, Iterable

from agentkeep.db.errors import InvalidInputError
from agentkeep.db.tables import TABLE_KEYWORDS, table_overrides


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else type(value).__name__


def text(value: Any, name: str, *, optional: bool = False, empty: bool = False) -> str | None:
    """A string (`optional`: or None; `empty`: "" too)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not value and not empty):
        raise InvalidInputError(f"{name} must be a {'' if empty else 'non-empty '}string, got {_shown(value)}")
    return value


def path(value: Any, name: str) -> str:
    """A file or directory path: a non-empty str or os.PathLike, without NUL."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidInputError(f"{name} must be a path (a non-empty str or os.PathLike), got {_shown(value)}")
    return value


def count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return value


def seconds(value: Any, name: str = "connect_timeout") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


def mapping(value: Any, name: str) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise InvalidInputError(f"{name} must be a dict, got {type(value).__name__}")
    return value


def parent_directory(file: str | os.PathLike) -> None:
    """Refuse a file whose directory does not exist, rather than creating directories."""
    parent = Path(file).parent
    if not parent.is_dir():
        raise InvalidInputError(f"no such directory: {parent}")


def parameters(db_class: type) -> list[str]:
    """The named parameters of a db class's constructor."""
    return [p.name for p in list(inspect.signature(db_class.__init__).parameters.values())[1:]
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


# words other libraries use where agentkeep says `file` or `url` (db_path -> db_file)
_SYNONYMS = {"path": "file", "filename": "file", "uri": "url", "dsn": "url"}


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name `name` most likely meant, if any is close."""
    valid = list(valid)
    for candidate in ("_".join(_SYNONYMS.get(w, w) for w in name.split("_")), name):
        close = difflib.get_close_matches(candidate, valid, n=1)
        if close:
            return close[0]
    return None


def unknown_argument(db_class: type, name: str, valid: Iterable[str]) -> InvalidInputError:
    close = closest(name, valid)
    if close:
        return InvalidInputError(f"unknown argument {name!r}; did you mean {close!r}?")
    return InvalidInputError(
        f"unknown argument {name!r}; {db_class.__name__} takes {', '.join(parameters(db_class))}"
        " and <table>_table= names (session_table=, memory_table=, ...)"
    )


def db_arguments(db: Any, *, id: Any, table_prefix: Any, tables: dict[str, Any]) -> dict[str, str]:
    """The checks every backend shares: `id`, the table prefix, and the keyword arguments
    left over, which may only rename tables (`session_table="chat_sessions"`). Returns
    the table-name overrides."""
    text(id, "id", optional=True)
    text(table_prefix, "table_prefix", empty=True)
    for name, value in tables.items():
        if name not in TABLE_KEYWORDS:
            raise unknown_argument(type(db), name, parameters(type(db)) + list(TABLE_KEYWORDS))
        text(value, name)
    return table_overrides(tables)
