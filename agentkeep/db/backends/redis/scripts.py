"""The Lua scripts (lua/*.lua): every read and write of the Redis kernel is one of them, run
by EVALSHA (atomic on the server, one round trip). Each starts with lib.lua, the helpers they
share; arguments are read in order from ARGV."""

from __future__ import annotations

from importlib.resources import files

_LUA = files(__package__) / "lua"
NAMES = ("get", "find", "count", "distinct", "group", "put", "update", "delete", "append", "claim", "reindex")


def _source(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text(encoding="utf-8")


SCRIPTS = {name: _source("lib") + _source(name) for name in NAMES}
SCRIPTS["unlock"] = _source("unlock")  # needs none of the helpers
