"""Tool definitions from signatures and docstrings; argument checks (no server needed)."""

from __future__ import annotations

import datetime as dt
from typing import Literal, Optional

import pytest
from pydantic import BaseModel

from agentkeep.agent import RunContext, tool
from agentkeep.agent.tools import ToolArgumentsError, as_tool, result_text
from agentkeep.db import InvalidInputError


class Filter(BaseModel):
    region: str
    since: Optional[dt.date] = None


def query(sql: str, limit: int = 10, mode: Literal["fast", "exact"] = "fast", where: Optional[Filter] = None,
          dependencies: dict | None = None, run_context: RunContext | None = None) -> list:
    """Run a read-only SQL query.

    Args:
        sql: the statement
        limit: rows at most
    """
    return []


def test_the_schema_comes_from_the_signature_and_docstring():
    t = as_tool(query)
    fn = t.definition["function"]
    assert fn["name"] == "query" and fn["description"] == "Run a read-only SQL query."
    props = fn["parameters"]["properties"]
    assert set(props) == {"sql", "limit", "mode", "where"}  # injected parameters are hidden
    assert props["sql"] == {"type": "string", "description": "the statement"}
    assert props["limit"]["default"] == 10 and props["mode"]["enum"] == ["fast", "exact"]
    assert fn["parameters"]["required"] == ["sql"] and fn["parameters"]["additionalProperties"] is False
    assert t.injected == ("dependencies", "run_context")


def test_arguments_are_checked_and_converted():
    t = as_tool(query)
    args = t.parse('{"sql": "select 1", "where": {"region": "eu", "since": "2026-01-02"}}')
    assert args["where"] == Filter(region="eu", since=dt.date(2026, 1, 2)) and args["limit"] == 10
    for raw, message in (("[1]", "JSON object"), ('{"sql": 1}', "sql"), ('{"sql": "x", "rows": 1}', "rows"),
                         ('{"sql": "x", "mode": "slow"}', "mode"), ("{", "not valid JSON")):
        with pytest.raises(ToolArgumentsError, match=message):
            t.parse(raw)


def test_methods_async_functions_and_options():
    class Shop:
        def price(self, item: str) -> float:
            """Price of an item."""
            return 1.5

    async def later(x: int) -> int:
        """Later."""
        return x

    assert as_tool(Shop().price).definition["function"]["parameters"]["properties"] == {"item": {"type": "string"}}
    assert as_tool(later).is_async
    t = tool(name="lookup", description="Look up.", requires_approval=True, approval_expires_in=60)(query)
    assert (t.name, t.description, t.requires_approval, t.approval_expires_in) == (
        "lookup", "Look up.", True, dt.timedelta(seconds=60))
    with pytest.raises(InvalidInputError):
        tool(query, name="has space")
    with pytest.raises(InvalidInputError):
        as_tool("not callable")


def test_results_become_text():
    assert result_text("plain") == "plain"
    assert result_text({"a": [1, 2]}) == '{"a": [1, 2]}'
    assert result_text(Filter(region="eu")) == '{"region":"eu","since":null}'
    assert result_text(dt.date(2026, 1, 2)) == '"2026-01-02"'
