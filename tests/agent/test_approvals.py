"""A tool that requires approval pauses the run; `continue_run` resumes it exactly once."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from agentkeep.agent import tool
from agentkeep.db import ConflictError, NotFoundError

from tests.conformance.backends import BY_NAME
from tests.processes import run_together

from .conftest import Reply, make_agent

executed: list[int] = []


@tool(requires_approval=True)
def refund(amount: int) -> str:
    """Refund an amount to the customer."""
    executed.append(amount)
    return f"refunded {amount}"


@pytest.fixture(autouse=True)
def _clear():
    executed.clear()


def paused_run(scripted, db, **options):
    server = scripted([Reply(tool_calls=[("refund", {"amount": 30})]), Reply("Refund sent.")])
    agent = make_agent(server, db, tools=[refund], **options)
    events = list(agent.run("refund me", user_id="alice", session_id="s1", stream=True))
    return server, agent, events


def test_a_run_pauses_before_the_tool_and_writes_an_approval(scripted, db):
    server, agent, events = paused_run(scripted, db)
    paused = events[-1]
    assert paused.event == "RunPaused" and executed == []
    run = db.get_run(paused.run_id)
    assert run.status == "paused" and run.tools[0]["status"] == "paused"
    approval = db.get_approval(paused.approvals[0])
    assert (approval.status, approval.tool_name, approval.tool_args) == ("pending", "refund", {"amount": 30})
    assert (approval.run_id, approval.session_id, approval.user_id, approval.agent_id) == (
        run.run_id, "s1", "alice", "helper")
    assert abs(approval.expires_at - approval.created_at - dt.timedelta(hours=24)) < dt.timedelta(minutes=1)  # default
    with pytest.raises(ConflictError, match="still pending"):
        agent.continue_run(run.run_id, user_id="alice", session_id="s1")
    assert db.get_run(run.run_id).status == "paused"


def test_an_approved_tool_runs_once_and_the_run_completes(scripted, db):
    server, agent, events = paused_run(scripted, db)
    db.resolve_approval(events[-1].approvals[0], status="approved", resolved_by="manager")
    run = agent.continue_run(events[-1].run_id, user_id="alice", session_id="s1")
    assert (run.status, run.content, executed) == ("completed", "Refund sent.", [30])
    assert run.tools[0]["status"] == "completed" and run.tools[0]["approval_status"] == "approved"
    assert [m["role"] for m in run.messages] == ["user", "assistant", "tool", "assistant"]
    assert server.requests[1]["messages"][-1]["content"] == "refunded 30"
    with pytest.raises(ConflictError, match="not paused"):
        agent.continue_run(run.run_id, user_id="alice", session_id="s1")
    assert executed == [30]


def test_a_rejected_tool_does_not_run_and_the_model_is_told(scripted, db):
    server, agent, events = paused_run(scripted, db)
    db.resolve_approval(events[-1].approvals[0], status="rejected", resolved_by="manager",
                        resolution={"reason": "over the limit"})
    continued = list(agent.continue_run(events[-1].run_id, user_id="alice", session_id="s1", stream=True))
    assert [e.event for e in continued][0] == "RunContinued" and continued[-1].event == "RunCompleted"
    assert executed == []
    told = server.requests[1]["messages"][-1]["content"]
    assert "did not approve" in told and "over the limit" in told
    assert db.get_run(events[-1].run_id).tools[0]["status"] == "rejected"


def test_an_expired_approval_counts_as_rejected(scripted, db):
    expiring = tool(refund.fn, requires_approval=True, approval_expires_in=0.2)
    server = scripted([Reply(tool_calls=[("refund", {"amount": 5})]), Reply("It expired.")])
    agent = make_agent(server, db, tools=[expiring])
    paused = agent.run("refund", user_id="alice", session_id="s1")
    approval = db.list_approvals(run_id=paused.run_id).items[0]
    assert approval.expires_at is not None and approval.expires_at - approval.created_at < dt.timedelta(seconds=1)
    time.sleep(0.3)
    run = agent.continue_run(paused.run_id, user_id="alice")
    assert run.status == "completed" and executed == []
    assert db.get_approval(approval.id).status == "expired"
    assert "(expired)" in server.requests[1]["messages"][-1]["content"]


def test_another_user_cannot_continue_a_run(scripted, db):
    server, agent, events = paused_run(scripted, db)
    db.resolve_approval(events[-1].approvals[0], status="approved", resolved_by="manager")
    with pytest.raises(NotFoundError):
        agent.continue_run(events[-1].run_id, user_id="mallory")
    with pytest.raises(NotFoundError):
        agent.continue_run(events[-1].run_id, user_id="alice", session_id="other")
    assert db.get_run(events[-1].run_id).status == "paused" and executed == []


def _resume(opener, base_url, run_id, marker_dir, barrier):
    """A process that tries to resume the run; the tool leaves a file behind when it runs."""
    import os

    from agentkeep.agent import Agent, tool as make_tool
    from agentkeep.models import OpenAIChat

    def refund(amount: int) -> str:
        """Refund."""
        with open(os.path.join(marker_dir, f"ran-{os.getpid()}"), "w") as f:
            f.write(str(amount))
        return "refunded"

    agent = Agent(OpenAIChat("scripted", base_url=base_url), name="Helper", db=opener(),
                  tools=[make_tool(refund, requires_approval=True)], retry_delay=0.01)
    barrier.wait()
    try:
        run = agent.continue_run(run_id, user_id="alice")
        outcome = f"won {run.status}"
    except ConflictError as exc:
        outcome = f"lost {exc}"
    with open(os.path.join(marker_dir, f"outcome-{os.getpid()}"), "w") as f:
        f.write(outcome)


@pytest.mark.parametrize("store", [BY_NAME["postgres"]], indirect=True, ids=["postgres"])
def test_two_processes_resume_a_paused_run_exactly_once(scripted, db, store, tmp_path):
    server, agent, events = paused_run(scripted, db)
    db.resolve_approval(events[-1].approvals[0], status="approved", resolved_by="manager")
    run_together(_resume, (store.opener, server.base_url, events[-1].run_id, str(tmp_path)), 2)
    outcomes = sorted(p.read_text() for p in tmp_path.glob("outcome-*"))
    assert len(outcomes) == 2 and outcomes[1] == "won completed" and outcomes[0].startswith("lost")
    assert len(list(tmp_path.glob("ran-*"))) == 1
    assert db.get_run(events[-1].run_id).status == "completed"
    assert len(server.requests) == 2
