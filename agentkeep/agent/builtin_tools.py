"""The schemas of the runtime's own tools (the runtime runs them: `_async/builtins.py`)."""

from __future__ import annotations

from typing import Optional

from agentkeep.agent.tools import Tool


def remember(memory: str, topics: Optional[list[str]] = None) -> str:
    """Remember a fact about the user for later conversations.

    Args:
        memory: the fact, in one short sentence
        topics: a few one-word topics
    """


def update_memory(memory_id: str, memory: str, topics: Optional[list[str]] = None) -> str:
    """Replace a remembered fact about the user (its id is in brackets in your context).

    Args:
        memory_id: the id of the memory
        memory: the corrected fact
        topics: a few one-word topics
    """


def forget(memory_id: str) -> str:
    """Forget a remembered fact about the user.

    Args:
        memory_id: the id of the memory
    """


def search_knowledge(query: str) -> list:
    """Search the knowledge base for passages that help answer the user.

    Args:
        query: what to look for
    """


MEMORY_TOOLS = ("remember", "update_memory", "forget")


def memory_tools() -> list[Tool]:
    return [Tool(fn, fn.__name__, _doc(fn), builtin=True) for fn in (remember, update_memory, forget)]


def knowledge_tools() -> list[Tool]:
    return [Tool(search_knowledge, "search_knowledge", _doc(search_knowledge), builtin=True)]


def _doc(fn) -> str:
    return (fn.__doc__ or "").strip().split("\n")[0]
