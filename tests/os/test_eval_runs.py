"""`POST /eval-runs` over real HTTP (uvicorn on a free port), the agent and the judge on
scripted OpenAI-protocol servers, on SQLite and PostgreSQL: the route answers 202 at once and
a durable job runs the eval (queued, running, then completed or failed); a user reaches only
their own eval runs; a bad body is 422 and writes nothing."""

from __future__ import annotations

import json
import threading
import time

import jwt

from agentkeep.agent import Agent, tool
from agentkeep.db.sqlite import SqliteDb
from agentkeep.models import OpenAIChat
from agentkeep.os import AgentOS, JWTAuth
from tests.agent.conftest import Reply, make_agent
from tests.os.conftest import finished_job

SECRET = "a-shared-secret-of-at-least-32-bytes!"
QUESTION = "What is the capital of France?"


def as_user(sub: str) -> dict:
    return {"Authorization": "Bearer " + jwt.encode({"sub": sub, "exp": int(time.time()) + 86400}, SECRET,
                                                    algorithm="HS256")}


ALICE, BOB = as_user("alice"), as_user("bob")  # made at import: valid for a whole test run


@tool
def lookup(order_id: str) -> str:
    """Look up an order."""
    return f"order {order_id} shipped"


def answers(body: dict) -> Reply:
    """The agent's model: a tool call for orders, then the answer; Paris for capitals."""
    question = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    if any(m["role"] == "tool" for m in body["messages"]):
        return Reply("It has shipped.")
    if "order" in question:
        return Reply(tool_calls=[("lookup", {"order_id": "A1"})])
    return Reply("Paris." if "capital" in question else "I do not know.")


def grades(body: dict) -> Reply:
    """The judge: the first criterion passes, the others fail; 9 out of 10 for Paris, and a
    reply with no grade for anything else."""
    system, text = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "criteria" in system:
        return Reply(json.dumps({"verdicts": [{"criterion": i, "passed": i == 1, "reason": f"r{i}"}
                                              for i in range(1, 6)]}))
    return Reply('{"score": 9, "reason": "right"}' if "<agent_answer>\nParis." in text else "I cannot grade this.")


def test_the_route_answers_at_once_and_a_job_runs_the_eval(scripted, db, serve):
    release, asked = threading.Event(), threading.Event()

    def slow(body: dict) -> Reply:  # the model holds its reply until the test releases it
        asked.set()
        release.wait(60)
        return Reply("The capital is Paris.")

    agent = make_agent(scripted(slow), db)
    http = serve(AgentOS(agents=[agent], db=db, jwt=JWTAuth(secret=SECRET)).get_app())
    try:
        posted = http.post("/eval-runs", headers=ALICE, json={
            "agent_id": "helper", "eval_type": "accuracy", "input": QUESTION, "expected_output": "Paris",
            "iterations": 2, "threshold": 1.0, "name": "capital"})
        # answered while the model still holds its reply: the eval does not run in the request
        assert posted.status_code == 202, posted.text
        assert not release.is_set()
        queued = posted.json()
        eval_id = queued["id"]
        assert (queued["status"], queued["user_id"], queued["name"], queued["agent_id"], queued["model"]) == (
            "queued", "alice", "capital", "helper", "scripted")
        assert queued["job_id"] == f"eval-{eval_id}" and queued["score"] is None

        assert asked.wait(60)  # the worker started the eval: its first agent run waits on the model
        running = http.get(f"/eval-runs/{eval_id}", headers=ALICE).json()
        assert running["status"] == "running" and running["score"] is None
        # another user's eval run and its job are as missing
        assert http.get(f"/eval-runs/{eval_id}", headers=BOB).status_code == 404
        assert http.get("/eval-runs", headers=BOB).json()["data"] == []
        assert http.get(f"/jobs/{queued['job_id']}", headers=BOB).status_code == 404
        assert http.patch(f"/eval-runs/{eval_id}", headers=BOB, json={"name": "x"}).status_code == 404
    finally:
        release.set()

    job = finished_job(http, queued["job_id"], ALICE)
    assert job["status"] == "completed", job
    assert job["result"] == {"eval_run_id": eval_id, "status": "completed", "score": 1.0, "passed": True}
    done = http.get(f"/eval-runs/{eval_id}", headers=ALICE).json()
    assert (done["status"], done["score"], done["error"], done["name"]) == ("completed", 1.0, None, "capital")
    assert done["created_at"] == queued["created_at"]
    iterations = done["result"]["iterations"]
    assert [it["output"] for it in iterations] == ["The capital is Paris."] * 2
    assert [it["match"] for it in iterations] == ["contains", "contains"]
    assert done["result"]["passed"] is True and done["result"]["threshold"] == 1.0
    # the agent's runs are Alice's
    assert {db.get_run(it["run_id"]).user_id for it in iterations} == {"alice"}
    assert [e["id"] for e in http.get("/eval-runs", headers=ALICE).json()["data"]] == [eval_id]


def test_judged_evals_and_a_failing_one_in_the_eval_db(scripted, db, serve, tmp_path):
    evals = SqliteDb(db_file=str(tmp_path / "evals.db"))
    agent = make_agent(scripted(answers), db, tools=[lookup])
    grader = Agent(OpenAIChat("judge", base_url=scripted(grades).base_url), name="grader", db=db)
    http = serve(AgentOS(agents=[agent, grader], db=db, eval_db=evals).get_app())

    def run_eval(body: dict) -> dict:
        posted = http.post("/eval-runs", json={"agent_id": "helper", "user_id": "carol", **body})
        assert posted.status_code == 202, posted.text
        assert posted.json()["status"] == "queued"
        job = finished_job(http, posted.json()["job_id"])
        return {"job": job, **http.get(f"/eval-runs/{posted.json()['id']}").json()}

    judged = run_eval({"eval_type": "accuracy", "input": QUESTION, "expected_output": "Paris", "scoring": "judge",
                       "judge_agent_id": "grader", "threshold": 0.8})
    assert (judged["status"], judged["score"], judged["result"]["passed"]) == ("completed", 0.9, True)
    assert judged["result"]["judge_model"] == "judge" and judged["job"]["status"] == "completed"

    criteria = ["names the city", "cites a source", "is in French"]
    checked = run_eval({"eval_type": "agent_as_judge", "input": QUESTION, "criteria": criteria,
                        "judge_agent_id": "grader", "threshold": 1.0})
    # one criterion of three passes: below the threshold, yet the eval itself completed
    assert checked["status"] == "completed" and checked["score"] == 1 / 3 and checked["result"]["passed"] is False
    assert [v["passed"] for v in checked["result"]["iterations"][0]["verdicts"]] == [True, False, False]

    tools = run_eval({"eval_type": "reliability", "input": "Where is my order A1?",
                      "expected_tool_calls": [{"name": "lookup", "arguments": {"order_id": "A1"}}]})
    assert (tools["status"], tools["score"]) == ("completed", 1.0)

    timed = run_eval({"eval_type": "performance", "input": QUESTION, "iterations": 2, "warmup": 0,
                      "measure_memory": False})
    assert timed["status"] == "completed" and len(timed["result"]["runs_ms"]) == 2 and timed["score"] is None

    failed = run_eval({"eval_type": "accuracy", "input": "Who won in 1066?", "expected_output": "William",
                       "scoring": "judge", "judge_agent_id": "grader"})
    assert failed["status"] == "failed" and "JudgeError" in failed["error"] and failed["score"] is None
    assert failed["job"]["status"] == "failed" and "no score" in failed["job"]["error"]

    # the eval runs are in the eval db, their jobs in the OS's
    ids = [e["id"] for e in (judged, checked, tools, timed, failed)]
    assert all(evals.get_eval_run(i, user_id="carol") is not None and db.get_eval_run(i) is None for i in ids)
    assert {j.id for j in db.list_jobs(kind="eval.run", limit=10).items} == {f"eval-{i}" for i in ids}
    listed = http.get("/eval-runs", params={"user_id": "carol", "eval_type": "accuracy"}).json()["data"]
    assert {e["id"] for e in listed} == {judged["id"], failed["id"]}
    evals.close()


def test_a_bad_body_is_422_and_writes_nothing(scripted, db, serve):
    server = scripted([Reply("x")], cycle=True)
    agent = make_agent(server, db)
    http = serve(AgentOS(agents=[agent], db=db, jwt=JWTAuth(secret=SECRET)).get_app())
    good = {"agent_id": "helper", "eval_type": "accuracy", "input": QUESTION, "expected_output": "Paris"}
    bad = [
        {},
        {k: v for k, v in good.items() if k != "expected_output"},
        {**good, "agent_id": "nobody"},
        {**good, "eval_type": "speed"},
        {**good, "scoring": "os:system"},  # no code named by the caller
        {**good, "scoring": "judge", "judge_agent_id": "nobody"},
        {**good, "iterations": 0},
        {**good, "threshold": 2},
        {**good, "input": "   "},
        {**good, "unexpected": 1},
        {"agent_id": "helper", "eval_type": "agent_as_judge", "input": QUESTION, "criteria": []},
        {"agent_id": "helper", "eval_type": "reliability", "input": QUESTION,
         "expected_tool_calls": [{"arguments": {"order_id": "A1"}}]},
        {"agent_id": "helper", "eval_type": "performance", "input": QUESTION, "warmup": -1},
        [good],
    ]
    for body in bad:
        r = http.post("/eval-runs", headers=ALICE, json=body)
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert r.json()["detail"]
    not_json = http.post("/eval-runs", headers={**ALICE, "Content-Type": "application/json"}, content=b"{not json")
    assert not_json.status_code in (400, 422)
    # for another user: forbidden, and nothing written either
    assert http.post("/eval-runs", headers=ALICE, json={**good, "user_id": "bob"}).status_code == 403
    assert db.list_eval_runs(limit=10).items == [] and db.list_jobs(kind="eval.run", limit=10).items == []
    assert server.requests == []
