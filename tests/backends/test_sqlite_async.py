"""AsyncSqliteDb specifics the conformance suite (which runs it on files) does not reach:
an in-memory database, private to its db object, and coroutines writing at once."""

import asyncio

import pytest

from agentkeep.db import Run, Session

pytest.importorskip("aiosqlite")


def test_in_memory_dbs_work_and_are_private():
    from agentkeep.db.sqlite import AsyncSqliteDb

    async def main():
        a, b = AsyncSqliteDb(":memory:"), AsyncSqliteDb(":memory:")
        s = await a.upsert_session(Session(user_id="u", name="only in a"))
        await a.append_run(Run(session_id=s.session_id, user_id="u"))
        got = await a.get_session(s.session_id, runs=-1)
        assert [r.seq for r in got.runs] == [1]
        assert (await b.list_sessions(user_id="u", with_total=True)).total == 0
        assert "multi_process" not in a.capabilities
        await a.close()
        await b.close()

    asyncio.run(main())


def test_coroutines_appending_at_once_lose_nothing(tmp_path):
    from agentkeep.db.sqlite import AsyncSqliteDb

    async def main():
        db = AsyncSqliteDb(db_file=str(tmp_path / "t.db"))
        sessions = [await db.upsert_session(Session(user_id="u")) for _ in range(5)]

        async def writer(s):
            for _ in range(20):
                await db.append_run(Run(session_id=s.session_id, user_id="u"))

        await asyncio.gather(*(writer(s) for s in sessions for _ in range(2)))
        for s in sessions:
            runs = (await db.get_session(s.session_id, runs=-1)).runs
            assert [r.seq for r in runs] == list(range(1, 41))
        await db.close()

    asyncio.run(main())
