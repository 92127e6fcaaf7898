"""`agentkeep eval FILE`: YAML and JSONL suites against an agent and a judge on scripted
OpenAI-protocol servers (over HTTP), eval runs recorded in a SQLite file; exit status 0 when
every case passes, 1 when one falls short, 2 on an error the user can fix."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeep.cli import app
from agentkeep.db.sqlite import SqliteDb
from agentkeep.eval import load_suite
from tests.agent.conftest import Reply

CAPITAL = "What is the capital of France?"
MODULE = '''
from agentkeep.agent import Agent, tool
from agentkeep.models import OpenAIChat


@tool
def lookup(order_id: str) -> str:
    """Look up an order."""
    return f"order {{order_id}} shipped"


agent = Agent(OpenAIChat("scripted", base_url={agent_url!r}), name="support", tools=[lookup], retry_delay=0.01)
judge = OpenAIChat("judge", base_url={judge_url!r})
not_an_agent = 42


def overlap(output, expected):
    want = set(expected.lower().split())
    return len(want & set(output.lower().strip(".").split())) / len(want)
'''


def agent_reply(body: dict) -> Reply:
    """The agent's model: a tool call for orders, then the answer; Paris for capitals."""
    messages = body["messages"]
    question = [m["content"] for m in messages if m["role"] == "user"][-1]
    if "explode" in question:
        return Reply(status=400, error="the model refused")
    if any(m["role"] == "tool" for m in messages):
        return Reply("Order A1 has shipped.")
    if "order" in question:
        return Reply(tool_calls=[("lookup", {"order_id": "A1"})])
    return Reply("Paris." if "capital" in question else "I do not know.")


def judge_reply(body: dict) -> Reply:
    """The judge: every criterion passes; a grade of 9 out of 10."""
    if "criteria" in body["messages"][0]["content"]:
        return Reply(json.dumps({"verdicts": [{"criterion": i, "passed": True, "reason": "fine"}
                                              for i in range(1, 11)]}))
    return Reply('{"score": 9, "reason": "right city"}')


@pytest.fixture
def project(scripted, tmp_path: Path, monkeypatch):
    """A working directory with a module of an agent and a judge on the scripted servers, and
    `run(*args)`: `agentkeep eval <args> --db <a SQLite file>` there."""
    agent_server, judge_server = scripted(agent_reply), scripted(judge_reply)
    module = f"evalapp_{uuid.uuid4().hex[:8]}"  # a new module each test: the CLI imports it in-process
    (tmp_path / f"{module}.py").write_text(MODULE.format(agent_url=agent_server.base_url,
                                                         judge_url=judge_server.base_url))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"AGENTKEEP_DB_URL": None, "COLUMNS": "200"})
    db_file = tmp_path / "evals.db"

    class Project:
        name = module
        path = tmp_path
        agent, judge = agent_server, judge_server

        @staticmethod
        def write(name: str, text: str, template: bool = True) -> str:
            text = textwrap.dedent(text)
            (tmp_path / name).write_text(text.format(module=module) if template else text)
            return name

        @staticmethod
        def run(*args: str):
            return runner.invoke(app, ["eval", *args, "--db", f"sqlite:///{db_file}", "--no-progress"])

        @staticmethod
        def eval_runs() -> list:
            with SqliteDb(db_file=str(db_file)) as db:
                return db.list_eval_runs(limit=100, order="created_asc").items

    return Project


SUITE = """\
    name: support
    agent: {module}:agent
    judge: {module}:judge
    threshold: 0.8
    cases:
      - name: capital
        type: accuracy
        input: What is the capital of France?
        expected_output: Paris
      - name: capital, judged
        type: accuracy
        input: What is the capital of France?
        expected_output: Paris
        scoring: judge
      - name: capital, scored by a function
        type: accuracy
        input: What is the capital of France?
        expected_output: paris
        scoring: {module}:overlap
      - name: polite
        type: agent_as_judge
        input: What is the capital of France?
        criteria: [names the city, is polite]
        threshold: 1.0
      - name: order lookup
        type: reliability
        input: Where is my order A1?
        expected_tool_calls:
          - name: lookup
            arguments: {{order_id: A1}}
      - name: latency
        type: performance
        input: What is the capital of France?
        iterations: 2
        warmup: 0
"""


def table_rows(output: str) -> dict[str, list[str]]:
    """The summary table's rows by case name (cells split on the table's bars)."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 6 and cells[0] not in ("case", ""):
            rows[cells[0]] = cells[1:]
    return rows


def test_a_yaml_suite_that_passes(project):
    result = project.run(project.write("suite.yaml", SUITE))
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert list(rows) == ["capital", "capital, judged", "capital, scored by a function", "polite", "order lookup",
                          "latency"]
    # case: type, score, threshold, result, ms
    assert rows["capital"][:4] == ["accuracy", "1.00", "0.80", "pass"]
    assert rows["capital, judged"][:4] == ["accuracy", "0.90", "0.80", "pass"]  # the judge's 9 / 10
    assert rows["polite"][:4] == ["agent_as_judge", "1.00", "1.00", "pass"]
    assert rows["order lookup"][:4] == ["reliability", "1.00", "0.80", "pass"]
    assert rows["latency"][:4] == ["performance", "-", "1.00", "pass"]  # no budgets: no score; every budget
    assert all(float(cells[4]) >= 0 for cells in rows.values())
    assert "6 of 6 case(s) passed" in result.stdout
    stored = project.eval_runs()
    assert [(e.name, e.eval_type, e.status) for e in stored] == [
        ("support: capital", "accuracy", "completed"), ("support: capital, judged", "accuracy", "completed"),
        ("support: capital, scored by a function", "accuracy", "completed"),
        ("support: polite", "agent_as_judge", "completed"), ("support: order lookup", "reliability", "completed"),
        ("support: latency", "performance", "completed")]
    assert [e.score for e in stored] == [1.0, 0.9, 1.0, 1.0, 1.0, None]
    assert {e.agent_id for e in stored} == {"support"} and all(e.result["passed"] for e in stored)


def test_a_yaml_suite_below_its_threshold_exits_1(project):
    suite = project.write("suite.yml", """\
        agent: {module}:agent
        cases:
          - name: capital
            type: accuracy
            input: What is the capital of France?
            expected_output: Paris
          - name: wrong city
            type: accuracy
            input: What is the capital of France?
            expected_output: Lyon
    """)
    result = project.run(suite)
    assert result.exit_code == 1, result.output
    rows = table_rows(result.stdout)
    assert rows["capital"][:4] == ["accuracy", "1.00", "1.00", "pass"]  # the default threshold: 1.0
    assert rows["wrong city"][:4] == ["accuracy", "0.00", "1.00", "fail"]
    assert "1 of 2 case(s) passed" in result.stdout
    assert [(e.name, e.score, e.result["passed"]) for e in project.eval_runs()] == [
        ("capital", 1.0, True), ("wrong city", 0.0, False)]


def test_a_jsonl_suite_with_the_agent_judge_and_threshold_from_the_command_line(project):
    cases = [
        {"name": "capital", "type": "accuracy", "input": CAPITAL, "expected_output": "Paris"},
        {"name": "judged", "type": "accuracy", "input": CAPITAL, "expected_output": "Paris", "scoring": "judge"},
        {"name": "order", "type": "reliability", "input": "Where is order A1?", "expected_tool_calls": ["lookup"]},
    ]
    suite = project.write("suite.jsonl", "\n".join(json.dumps(c) for c in cases) + "\n\n", template=False)
    options = ["--agent", f"{project.name}:agent", "--judge", f"{project.name}:judge"]

    strict = project.run(suite, *options)  # the judged case's 0.9 is under the default 1.0
    assert strict.exit_code == 1, strict.output
    assert table_rows(strict.stdout)["judged"][:4] == ["accuracy", "0.90", "1.00", "fail"]

    lenient = project.run(suite, *options, "--threshold", "0.9")
    assert lenient.exit_code == 0, lenient.output
    rows = table_rows(lenient.stdout)
    assert [cells[3] for cells in rows.values()] == ["pass", "pass", "pass"]
    assert rows["judged"][:3] == ["accuracy", "0.90", "0.90"]
    assert len(project.eval_runs()) == 6


def test_a_case_that_fails_is_reported_with_its_error(project):
    suite = project.write("suite.yaml", """\
        agent: {module}:agent
        cases:
          - name: capital
            type: accuracy
            input: What is the capital of France?
            expected_output: Paris
          - name: refused
            type: accuracy
            input: Please explode.
            expected_output: Paris
    """)
    result = project.run(suite)
    assert result.exit_code == 1, result.output
    rows = table_rows(result.stdout)
    assert rows["capital"][3] == "pass" and rows["refused"][:4] == ["accuracy", "-", "1.00", "error"]
    assert "refused: AgentRunError" in result.stdout and "the model refused" in result.stdout
    assert [(e.name, e.status) for e in project.eval_runs()] == [("capital", "completed"), ("refused", "failed")]


def test_a_scoring_reference_that_is_not_a_function_exits_2(project):
    suite = project.write("suite.yaml", """\
        agent: {module}:agent
        cases:
          - name: odd scoring
            type: accuracy
            input: What is the capital of France?
            expected_output: Paris
            scoring: {module}:not_an_agent
    """)
    result = project.run(suite)  # refused before anything runs
    assert result.exit_code == 2 and "is not a function" in result.stderr
    assert project.eval_runs() == [] and project.agent.requests == []


@pytest.mark.parametrize("name, text, message", [
    ("suite.txt", "cases: []", "a suite is a .yaml, .yml or .jsonl file"),
    ("suite.yaml", "agent: {module}:agent\ncases:\n  - name: x\n    input: [unclosed\n",
     "suite.yaml line 5: not valid YAML"),
    ("suite.yaml", "agent: {module}:agent\ncases: []\n", "the suite has no cases"),
    ("suite.yaml", "agent: {module}:agent\nmodel: x\ncases: []\n", "unknown suite keys ['model']"),
    ("suite.yaml", "agent: {module}:agent\ncases:\n  - type: accuracy\n    input: hi\n    expected_output: x\n"
                   "  - name: odd\n    type: speed\n    input: hi\n",
     "suite.yaml, case 2 ('odd'), line 6: type: must be one of accuracy, agent_as_judge, reliability, performance"),
    ("suite.yaml", "agent: {module}:agent\ncases:\n  - name: capital\n    type: accuracy\n    input: hi\n",
     "suite.yaml, case 1 ('capital'), line 3: expected_output: Field required"),
    ("suite.yaml", "agent: {module}:agent\ncases:\n  - name: many\n    type: accuracy\n    input: hi\n"
                   "    expected_output: x\n    iterations: 0\n",
     "case 1 ('many'), line 3: iterations: Input should be greater than or equal to 1"),
    ("suite.yaml", "agent: {module}:agent\ncases:\n  - name: c\n    type: agent_as_judge\n    input: hi\n"
                   "    criteria: [polite]\n", "case 1 ('c'), line 3: case 'c' needs a judge model"),
    ("suite.jsonl", '{{"type": "accuracy", "input": "hi", "expected_output": "x"}}\n{{not json\n',
     "suite.jsonl line 2: not JSON"),
    ("suite.jsonl", '{{"type": "accuracy", "input": "hi", "expected_output": "x"}}\n',
     "the suite names no agent: give one (--agent module:attribute)"),
    ("suite.yaml", "agent: {module}:nothing\ncases:\n  - {{type: accuracy, input: hi, expected_output: x}}\n",
     "has no attribute 'nothing'"),
    ("suite.yaml", "agent: {module}:not_an_agent\ncases:\n  - {{type: accuracy, input: hi, expected_output: x}}\n",
     "the agent must be an Agent, got int"),
    ("suite.yaml", "agent: nomodule_here:agent\ncases:\n  - {{type: accuracy, input: hi, expected_output: x}}\n",
     "cannot import 'nomodule_here'"),
])
def test_user_errors_exit_2_and_write_nothing(project, name, text, message):
    result = project.run(project.write(name, text))
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert project.eval_runs() == [] and project.agent.requests == []


def test_a_missing_file_exits_2(project):
    result = project.run("nowhere.yaml")
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_the_suite_from_python(project):
    suite = load_suite(project.path / project.write("suite.yaml", SUITE))
    assert (suite.name, suite.threshold, len(suite.cases), suite.lines[0]) == ("support", 0.8, 6, 6)
    heard = []
    with SqliteDb(db_file=str(project.path / "python.db")) as db:
        outcome = suite.run(db=db, user_id="ci", on_result=heard.append)
        assert outcome.passed and [c.name for c in heard] == [c.name for c in outcome.cases]
        assert {e.user_id for e in db.list_eval_runs(limit=10).items} == {"ci"}
