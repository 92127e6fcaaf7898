"""Several dbs: the records on SQLite, traces and evals split off to PostgreSQL. Each
domain is written and read where it lives, and `/config` says where that is."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from agentkeep.agent import tracing
from agentkeep.db.models import EvalRun
from agentkeep.db.sqlite import SqliteDb
from agentkeep.os import AgentOS
from tests.agent.conftest import Reply, make_agent
from tests.conformance.backends import BY_NAME
from tests.conftest import pooled_store, require_backend


@pytest.fixture
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_backend(BY_NAME["postgres"])
    with pooled_store(BY_NAME["postgres"], tmp_path_factory) as handle:
        yield handle.db


@pytest.mark.server
def test_traces_and_evals_live_in_their_own_db(scripted, serve, postgres, tmp_path):
    records = SqliteDb(db_file=str(tmp_path / "records.db"))
    agent = make_agent(scripted([Reply("split")]), None)
    http = serve(AgentOS(agents=[agent], db=records, trace_db=postgres, eval_db=postgres).get_app())
    run = http.post("/agents/helper/runs", json={"message": "hi", "session_id": "s1", "user_id": "alice"}).json()
    tracing.flush()
    assert records.get_run(run["run_id"]).content == "split" and postgres.get_run(run["run_id"]) is None
    [trace] = postgres.list_traces(run_id=run["run_id"]).items
    assert records.list_traces().items == []  # the spans went to the trace db only
    assert [t["trace_id"] for t in http.get("/traces", params={"run_id": run["run_id"]}).json()["data"]] == [
        trace.trace_id]

    saved = postgres.save_eval_run(EvalRun(eval_type="performance", agent_id="helper"))
    assert [e["id"] for e in http.get("/eval-runs").json()["data"]] == [saved.id]
    assert records.list_eval_runs().items == []

    config = http.get("/config").json()
    domains = config["domains"]
    assert domains["sessions"] == domains["memories"] == config["os_database"]
    assert domains["traces"] == domains["evals"] != config["os_database"]
    assert set(domains.values()) <= set(config["databases"])
    records.close()
