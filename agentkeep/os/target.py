"""What `agentkeep serve module:attribute` serves: an AgentOS (its app), an ASGI app, or an
Agent or a list of Agents (served by an AgentOS on the `--db` URL)."""

from __future__ import annotations

import importlib
import ipaddress
import os
import sys
from typing import Any

from agentkeep.db.errors import InvalidInputError

TARGET_ENV = "AGENTKEEP_SERVE_TARGET"  # how uvicorn's reloader finds the target again
DB_ENV = "AGENTKEEP_SERVE_DB"  # and the --db it was given


def public_without_auth(host: str) -> str | None:
    """Why serving on `host` is refused without --insecure (None for a loopback address)."""
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (f"refusing to serve on {host} without authentication: the server trusts the user_id of every "
            "request; give the AgentOS a security_key (or $AGENTKEEP_SECURITY_KEY) or jwt=JWTAuth(...), bind "
            "127.0.0.1, or pass --insecure if something in front of it authenticates")


def authenticates(app: Any) -> bool:
    """Whether `app` is an AgentOS's app with a security key or JWTs."""
    agent_os = getattr(getattr(app, "state", None), "os", None)
    return bool(agent_os is not None and agent_os.auth.enabled)


def load(target: str, db_url: str | None = None) -> Any:
    """The ASGI app `target` names; `db_url`: the db of an AgentOS made for agents (an
    AgentOS or an app has its own, so it is refused there)."""
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
    from agentkeep.agent import Agent
    from agentkeep.os.app import AgentOS

    agents = [obj] if isinstance(obj, Agent) else obj if isinstance(obj, (list, tuple)) else None
    if agents and all(isinstance(a, Agent) for a in agents):
        from agentkeep.cli.common import DEFAULT_DB_URL
        from agentkeep.db.urls import connect

        return AgentOS(agents=agents, db=connect(db_url or DEFAULT_DB_URL)).get_app()
    if db_url is not None:
        raise InvalidInputError(f"--db is for a target that is an Agent or a list of Agents; {target!r} has "
                                "its own db")
    if isinstance(obj, AgentOS):
        return obj.get_app()
    if callable(obj):
        return obj
    raise InvalidInputError(f"{target!r} is neither an AgentOS, an ASGI app, an Agent nor a list of Agents")


def from_env() -> Any:
    """The app named by $AGENTKEEP_SERVE_TARGET (uvicorn's factory when reloading)."""
    return load(os.environ[TARGET_ENV], os.environ.get(DB_ENV))
