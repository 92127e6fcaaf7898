"""Each eval against an agent on the scripted OpenAI-protocol server (over HTTP), a judge on
another, and real dbs (SQLite and PostgreSQL): the scores (worked out here on their own), the
stored EvalRun, thresholds that fail, and bad input that raises and writes nothing."""

from __future__ import annotations

import asyncio
import json
import re

import numpy
import pytest

from agentkeep.agent import tool
from agentkeep.db.errors import InvalidInputError, OwnershipError
from agentkeep.db.models import EvalRun
from agentkeep.eval import AccuracyEval, AgentAsJudgeEval, PerformanceEval, ReliabilityEval
from agentkeep.eval.scoring import match_score, parse_grade, parse_verdicts
from agentkeep.models import OpenAIChat
from tests.agent.conftest import Reply, make_agent

MIB = 1024 * 1024
QUESTION = "What is the capital of France?"


def judge_on(server) -> OpenAIChat:
    return OpenAIChat("judge", base_url=server.base_url)


def user_text(request: dict) -> str:
    return "\n".join(m["content"] for m in request["messages"] if m["role"] == "user")


@tool
def lookup(order_id: str) -> str:
    """Look up an order."""
    return f"order {order_id} shipped"


@tool
def refund(amount: int) -> str:
    """Refund an amount."""
    return f"refunded {amount}"


@tool
def notify(message: str) -> str:
    """Notify the customer."""
    return "sent"


# -- accuracy ---------------------------------------------------------------------------------

def test_accuracy_by_the_normalized_match(scripted, db):
    answers = ["The capital is Paris.", "Lyon, surely", "PARIS"]
    agent = make_agent(scripted([Reply(a) for a in answers]), db)
    result = AccuracyEval(agent, input=QUESTION, expected_output="Paris", num_iterations=3, threshold=0.6,
                          name="capital", db=db).run(user_id="alice")

    # on its own: the answer's lower-cased words include "paris"
    expected = [1.0 if "paris" in re.findall(r"\w+", a.lower()) else 0.0 for a in answers]
    assert [it["score"] for it in result.result["iterations"]] == expected == [1.0, 0.0, 1.0]
    assert result.score == pytest.approx(sum(expected) / len(expected)) and result.passed
    stored = db.get_eval_run(result.eval_run.id, user_id="alice")
    assert (stored.status, stored.eval_type, stored.name, stored.agent_id, stored.model, stored.input) == (
        "completed", "accuracy", "capital", "helper", "scripted", QUESTION)
    assert stored.score == pytest.approx(2 / 3) and stored.error is None
    assert stored.result["passed"] is True and stored.result["threshold"] == 0.6
    assert stored.result["scoring"] == "match" and stored.result["expected_output"] == "Paris"
    assert [it["match"] for it in stored.result["iterations"]] == ["contains", "none", "exact"]
    # each iteration is a run of the agent, kept as the eval's user's
    runs = [db.get_run(it["run_id"]) for it in stored.result["iterations"]]
    assert [r.content for r in runs] == answers and {r.user_id for r in runs} == {"alice"}

    again = make_agent(scripted([Reply(a) for a in answers]), db)
    failing = AccuracyEval(again, input=QUESTION, expected_output="Paris", num_iterations=3, threshold=0.9,
                           db=db).run(user_id="alice")
    assert failing.status == "completed" and failing.score == pytest.approx(2 / 3) and not failing.passed
    assert db.get_eval_run(failing.eval_run.id).result["passed"] is False


def test_accuracy_by_a_scoring_function(scripted, db):
    answers = ["red green", "red blue yellow", "nothing at all"]

    def overlap(output: str, expected: str) -> float:
        want = set(expected.split())
        return len(want & set(output.split())) / len(want)

    agent = make_agent(scripted([Reply(a) for a in answers]), db)
    result = AccuracyEval(agent, input="Name three colours.", expected_output="red green blue", scorer=overlap,
                          num_iterations=3, threshold=0.5, db=db).run()
    by_hand = [2 / 3, 2 / 3, 0.0]  # shared words out of the expected three
    assert [it["score"] for it in result.result["iterations"]] == pytest.approx(by_hand)
    assert result.score == pytest.approx(sum(by_hand) / 3) and not result.passed  # 0.44 < 0.5
    assert result.result["scoring"].startswith("function:") and "overlap" in result.result["scoring"]

    # a function that answers outside [0, 1] fails the eval, with the reason kept
    broken = AccuracyEval(make_agent(scripted([Reply("red")]), db), input="Name a colour.", expected_output="red",
                          scorer=lambda output, expected: 1.5, db=db).run()
    assert broken.status == "failed" and broken.score is None and not broken.passed
    assert "must return a number in [0, 1]" in broken.error
    assert db.get_eval_run(broken.eval_run.id).status == "failed"


def test_accuracy_by_a_judge_model_async(scripted, db):
    answers = ["Paris", "Paris, France", "Lyon"]
    replies = ['{"score": 7, "reason": "mostly right"}', "Score: 4/10 - vague",
               '```json\n{"score": 10, "reason": "exact"}\n```']
    agent = make_agent(scripted([Reply(a) for a in answers]), db)
    judge_server = scripted([Reply(r) for r in replies])
    evaluation = AccuracyEval(agent, input=QUESTION, expected_output="Paris", judge=judge_on(judge_server),
                              guidelines="Be strict about the city.", num_iterations=3, threshold=0.75, db=db)
    result = asyncio.run(evaluation.arun(user_id="bob"))

    grades = [7, 4, 10]
    assert [it["grade"] for it in result.result["iterations"]] == grades
    assert result.score == pytest.approx(sum(g / 10 for g in grades) / 3)  # 0.7
    assert result.status == "completed" and not result.passed  # under 0.75
    assert [it["reason"] for it in result.result["iterations"]][0] == "mostly right"
    assert result.result["judge_model"] == "judge" and result.result["scoring"] == "judge"
    # the judge saw the question, the expected answer, each answer and the guidelines
    assert len(judge_server.requests) == 3
    for request, answer in zip(judge_server.requests, answers):
        text = user_text(request)
        assert QUESTION in text and "<expected_answer>\nParis\n" in text and f"<agent_answer>\n{answer}\n" in text
        assert "Be strict about the city." in text
    assert db.get_eval_run(result.eval_run.id, user_id="bob").score == pytest.approx(0.7)


def test_a_judge_reply_without_a_grade_fails_the_eval(scripted, db):
    agent = make_agent(scripted([Reply("Paris")]), db)
    result = AccuracyEval(agent, input=QUESTION, expected_output="Paris",
                          judge=judge_on(scripted([Reply("I would rather not say.")])), db=db).run()
    assert result.status == "failed" and "JudgeError" in result.error and "no score" in result.error
    stored = db.get_eval_run(result.eval_run.id)
    assert (stored.status, stored.score, stored.result["passed"]) == ("failed", None, False)
    assert stored.result["iterations"] == []  # the iteration did not finish


def test_judge_replies_are_read_robustly():
    assert parse_grade('{"score": "8", "reason": "ok"}') == (8.0, "ok")
    assert parse_grade("Grade: 6.5")[0] == 6.5
    assert parse_grade("I'd give it 3 out of 10.")[0] == 3.0
    assert parse_grade(" 9 ")[0] == 9.0
    for reply in ("Score: 11", "no idea", '{"score": "high"}'):
        with pytest.raises(Exception, match="score"):
            parse_grade(reply)
    assert parse_verdicts("1) yes: fine\n2) NO - missing", 2) == [(True, "fine"), (False, "missing")]
    with pytest.raises(Exception, match=r"no verdict for criteria \[2\]"):
        parse_verdicts('{"verdicts": [{"criterion": 1, "passed": true}]}', 2)
    assert match_score("It costs 14 euros", "4") == (0.0, "none")
    assert match_score("It costs 4 euros", "4 EUROS") == (1.0, "contains")


# -- agent as judge ---------------------------------------------------------------------------

CRITERIA = ["names the capital", "is one sentence", "cites a source"]


def test_agent_as_judge_with_criteria(scripted, db):
    verdicts = {"verdicts": [{"criterion": 1, "passed": True, "reason": "says Paris"},
                             {"criterion": 2, "passed": True, "reason": "one sentence"},
                             {"criterion": 3, "passed": False, "reason": "no source"}]}
    replies = [json.dumps(verdicts), "1. PASS - says Paris\n2. FAIL - two sentences\n3. FAIL - no source"]
    agent = make_agent(scripted([Reply("Paris is the capital."), Reply("Paris. It is big.")]), db)
    judge_server = scripted([Reply(r) for r in replies])
    result = AgentAsJudgeEval(agent, judge=judge_on(judge_server), criteria=CRITERIA, input=QUESTION,
                              num_iterations=2, threshold=0.5, db=db).run(user_id="alice")

    passed = [[True, True, False], [True, False, False]]
    by_hand = [sum(p) / len(p) for p in passed]
    iterations = result.result["iterations"]
    assert [[v["passed"] for v in it["verdicts"]] for it in iterations] == passed
    assert [it["score"] for it in iterations] == pytest.approx(by_hand)
    assert result.score == pytest.approx(sum(by_hand) / 2) and result.passed  # 0.5, at the threshold
    assert iterations[1]["verdicts"][1] == {"criterion": "is one sentence", "passed": False,
                                           "reason": "two sentences"}
    assert all(f"{i}. {c}" in user_text(judge_server.requests[0]) for i, c in enumerate(CRITERIA, 1))
    stored = db.get_eval_run(result.eval_run.id, user_id="alice")
    assert (stored.eval_type, stored.status, stored.result["criteria"]) == ("agent_as_judge", "completed", CRITERIA)


def test_agent_as_judge_on_a_given_output_below_its_threshold(scripted, db):
    judge_server = scripted([Reply('{"verdicts": [{"criterion": 1, "passed": true, "reason": "a"}, '
                                   '{"criterion": 2, "passed": false, "reason": "b"}]}')])
    result = AgentAsJudgeEval(judge=judge_on(judge_server), criteria=CRITERIA[:2], output="Paris. Surely.",
                              threshold=1.0, name="given", db=db).run()
    assert result.score == 0.5 and result.status == "completed" and not result.passed
    assert "<agent_answer>\nParis. Surely.\n" in user_text(judge_server.requests[0])
    assert db.get_eval_run(result.eval_run.id).agent_id is None


# -- reliability ------------------------------------------------------------------------------

def test_reliability_against_the_tool_calls_of_the_run(scripted, db):
    server = scripted([Reply(tool_calls=[("lookup", {"order_id": "A1"}), ("refund", {"amount": 5})]), Reply("done")],
                      cycle=True)
    agent = make_agent(server, db, tools=[lookup, refund, notify])
    expected = [{"name": "lookup", "arguments": {"order_id": "A1"}}, "notify"]
    result = ReliabilityEval(agent, input="Where is order A1?", expected_tool_calls=expected, threshold=0.5,
                             db=db).run(user_id="alice")
    [it] = result.result["iterations"]
    # lookup(A1) matched; notify missing; refund made and not expected: 1 of (2 expected + 1 unexpected)
    assert result.score == pytest.approx(1 / 3) and not result.passed
    assert it["missing"] == [{"name": "notify", "arguments": None}]
    assert [c["name"] for c in it["unexpected"]] == ["refund"] and it["matched"] == 1
    run = db.get_run(it["run_id"])
    assert [t["tool_name"] for t in run.tools] == ["lookup", "refund"]

    lenient = ReliabilityEval(agent, input="Where is order A1?", expected_tool_calls=expected, allow_unexpected=True,
                              db=db).run()
    assert lenient.score == pytest.approx(1 / 2)  # the extra call is listed, not counted
    assert [c["name"] for c in lenient.result["iterations"][0]["unexpected"]] == ["refund"]

    # arguments are a subset: lookup(B2) is not the call made
    wrong = ReliabilityEval(agent, input="Where is order A1?", db=db,
                            expected_tool_calls=[{"name": "lookup", "arguments": {"order_id": "B2"}}, "refund"]).run()
    assert wrong.score == pytest.approx(1 / 3)
    assert wrong.result["iterations"][0]["missing"] == [{"name": "lookup", "arguments": {"order_id": "B2"}}]

    # a run already made, checked as it is: both calls, in any order
    checked = ReliabilityEval(run=run, expected_tool_calls=["refund", {"name": "lookup"}], threshold=1.0, db=db).run()
    assert checked.score == 1.0 and checked.passed and checked.eval_run.agent_id == "helper"
    assert checked.eval_run.input == "Where is order A1?"
    assert {e.score for e in db.list_eval_runs(eval_type="reliability", limit=10).items} == {1 / 3, 1 / 2, 1.0}


# -- performance ------------------------------------------------------------------------------

def test_performance_of_a_function(db):
    calls = []

    def work() -> int:
        calls.append(1)
        block = bytearray(2 * MIB)  # alive until the function returns
        return len(block)

    result = PerformanceEval(work, num_iterations=4, warmup_iterations=2, max_peak_memory_mib=1.0, name="alloc",
                             db=db).run()
    assert len(calls) == 2 + 4 + 4  # the warm-up, the timed iterations, the traced ones
    runs_ms, latency = result.result["runs_ms"], result.result["latency_ms"]
    assert len(runs_ms) == 4
    assert latency["p50"] == pytest.approx(numpy.percentile(runs_ms, 50))
    assert latency["p95"] == pytest.approx(numpy.percentile(runs_ms, 95))
    assert (latency["mean"], latency["min"], latency["max"]) == pytest.approx(
        (numpy.mean(runs_ms), min(runs_ms), max(runs_ms)))
    peaks = result.result["memory_peaks_bytes"]
    assert len(peaks) == 4 and min(peaks) >= 2 * MIB
    assert result.result["peak_memory_mib"] == pytest.approx(max(peaks) / MIB)
    # the 1 MiB budget is not met: the score is the fraction of budgets met, under 1.0
    assert result.result["budgets"]["peak_memory_mib"]["met"] is False
    assert result.score == 0.0 and result.status == "completed" and not result.passed
    stored = db.get_eval_run(result.eval_run.id)
    assert (stored.eval_type, stored.name, stored.score) == ("performance", "alloc", 0.0)
    assert stored.result["passed"] is False


def test_performance_of_an_agent_run_async(scripted, db):
    server = scripted([Reply("fine")], cycle=True)
    agent = make_agent(server, db)
    result = asyncio.run(PerformanceEval(agent, input="hi", num_iterations=3, warmup_iterations=1,
                                         max_peak_memory_mib=4096, db=db).arun(user_id="carol"))
    assert len(server.requests) == 1 + 3 + 3
    assert result.status == "completed" and result.score == 1.0 and result.passed
    assert result.result["budgets"]["peak_memory_mib"]["measured"] == result.result["peak_memory_mib"]
    stored = db.get_eval_run(result.eval_run.id, user_id="carol")
    assert (stored.agent_id, stored.model, stored.input) == ("helper", "scripted", "hi")
    assert len(db.list_sessions(user_id="carol", limit=20).items) == 7  # a session per agent run

    async def pause() -> str:
        await asyncio.sleep(0)
        return "ok"

    timed = asyncio.run(PerformanceEval(pause, num_iterations=2, warmup_iterations=0, measure_memory=False).arun())
    assert timed.score is None and timed.passed and len(timed.result["runs_ms"]) == 2
    assert "memory_peaks_bytes" not in timed.result


# -- failures and bad input -------------------------------------------------------------------

def test_a_run_that_fails_fails_the_eval(scripted, db):
    agent = make_agent(scripted([Reply(status=400, error="bad request")]), db)
    result = AccuracyEval(agent, input=QUESTION, expected_output="Paris", threshold=0.0, db=db).run()
    assert result.status == "failed" and "AgentRunError" in result.error and not result.passed
    stored = db.get_eval_run(result.eval_run.id)
    assert (stored.status, stored.score) == ("failed", None) and "bad request" in stored.error


def test_an_eval_writes_the_queued_record_it_is_given(scripted, db):
    queued = db.save_eval_run(EvalRun(eval_type="accuracy", status="queued", name="nightly", user_id="alice"))
    agent = make_agent(scripted([Reply("Paris")]), db)
    result = AccuracyEval(agent, input=QUESTION, expected_output="Paris", name="nightly", db=db).run(
        user_id="alice", eval_run_id=queued.id)
    stored = db.get_eval_run(queued.id, user_id="alice")
    assert result.eval_run.id == queued.id and (stored.status, stored.score) == ("completed", 1.0)
    assert stored.created_at == queued.created_at and len(db.list_eval_runs(limit=10).items) == 1
    # another user's record is refused before the agent runs
    server = scripted([Reply("Paris")])
    with pytest.raises(OwnershipError):
        AccuracyEval(make_agent(server, db), input=QUESTION, expected_output="Paris", db=db).run(
            user_id="bob", eval_run_id=queued.id)
    assert server.requests == [] and db.get_eval_run(queued.id).user_id == "alice"


def test_bad_input_raises_and_writes_nothing(scripted, db):
    server = scripted([Reply("x")], cycle=True)
    agent, judge = make_agent(server, db), judge_on(server)

    async def coroutine_function() -> None:
        return None

    def score(output: str, expected: str) -> float:
        return 1.0

    bad = {
        "no agent": lambda: AccuracyEval(None, input="x", expected_output="y"),
        "blank input": lambda: AccuracyEval(agent, input="  ", expected_output="y"),
        "a scorer and a judge": lambda: AccuracyEval(agent, input="x", expected_output="y", scorer=score, judge=judge),
        "a threshold over 1": lambda: AccuracyEval(agent, input="x", expected_output="y", threshold=1.5),
        "no iterations": lambda: AccuracyEval(agent, input="x", expected_output="y", num_iterations=0),
        "a judge that is not a model": lambda: AccuracyEval(agent, input="x", expected_output="y", judge="gpt-4o"),
        "not a db": lambda: AccuracyEval(agent, input="x", expected_output="y", db=object()),
        "no criteria": lambda: AgentAsJudgeEval(agent, judge=judge, criteria=[], input="x"),
        "a criterion that is blank": lambda: AgentAsJudgeEval(agent, judge=judge, criteria=["ok", " "], input="x"),
        "an agent and an output": lambda: AgentAsJudgeEval(agent, judge=judge, criteria=["ok"], input="x", output="y"),
        "a call without a name": lambda: ReliabilityEval(agent, input="x", expected_tool_calls=[{"tool": "lookup"}]),
        "calls as a string": lambda: ReliabilityEval(agent, input="x", expected_tool_calls="lookup"),
        "neither agent nor run": lambda: ReliabilityEval(input="x", expected_tool_calls=[]),
        "a target that cannot run": lambda: PerformanceEval(42),
        "an agent without input": lambda: PerformanceEval(agent),
        "a negative budget": lambda: PerformanceEval(score, max_p95_ms=-1),
        "a memory budget unmeasured": lambda: PerformanceEval(score, max_peak_memory_mib=1, measure_memory=False),
        "an async function run sync": lambda: PerformanceEval(coroutine_function, db=db).run(),
        "a user id that is not one": lambda: AccuracyEval(agent, input="x", expected_output="y", db=db).run(user_id=7),
    }
    for why, make in bad.items():
        with pytest.raises(InvalidInputError):
            make()
            pytest.fail(why)
    assert db.list_eval_runs(limit=10).items == [] and server.requests == []


def test_an_async_db_takes_arun(scripted, tmp_path):
    from agentkeep.db import AsyncSqliteDb

    agent = make_agent(scripted([Reply("Paris")], cycle=True), None)

    async def main() -> None:
        async with AsyncSqliteDb(db_file=str(tmp_path / "evals.db")) as adb:
            evaluation = AccuracyEval(agent, input=QUESTION, expected_output="Paris", db=adb)
            with pytest.raises(InvalidInputError, match="use arun"):
                evaluation.run()
            result = await evaluation.arun(user_id="dana")
            stored = await adb.get_eval_run(result.eval_run.id, user_id="dana")
            assert (stored.status, stored.score) == ("completed", 1.0)

    asyncio.run(main())
