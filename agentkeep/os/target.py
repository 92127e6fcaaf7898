"""What `agentkeep serve module:attribute` serves: an AgentOS (its app) or an ASGI app."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from agentkeep.db.errors import InvalidInputError

TARGET_ENV = "AGENTKEEP_SERVE_TARGET"  # how uvicorn's reloader finds the target again


def load(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise InvalidInputError(f"expected module:attribute, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the module is the user's
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(f"cannot import {module_name!r}: {exc}") from None
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise InvalidInputError(f"{module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    from agentkeep.os.app import AgentOS

    if isinstance(obj, AgentOS):
        return obj.get_app()
    if callable(obj):
        return obj
    raise InvalidInputError(f"{target!r} is neither an AgentOS nor an ASGI app")


def from_env() -> Any:
    """The app named by $AGENTKEEP_SERVE_TARGET (uvicorn's factory when reloading)."""
    return load(os.environ[TARGET_ENV])
