"""SingleStore's DDL, as rendered for a SingleStore server (none runs here, so the text of
the statements is what can be checked; the conformance suite runs the rest on MariaDB)."""

import pytest

pytest.importorskip("pymysql")

from agentkeep.db.kernel import Step  # noqa: E402
from agentkeep.db.singlestore import SingleStoreKernel, _url  # noqa: E402
from agentkeep.db.tables import build_specs  # noqa: E402


@pytest.fixture
def kernel():
    k = SingleStoreKernel(_url("singlestoredb://root@127.0.0.1:3306/agentkeep"), 1)
    k.setup(build_specs("agentkeep_", None))
    k.native = True
    yield k
    k.close()


def _create(kernel, table):
    t = kernel.tables[table] if table in kernel.tables else kernel.side[(table.split(":")[0], table.split(":")[1])]
    return kernel.ddl(Step("", "create_table", t.name, t))


def test_tables_are_rowstore_and_sharded_on_their_key(kernel):
    sql = _create(kernel, "runs")
    assert sql.startswith("CREATE ROWSTORE TABLE IF NOT EXISTS agentkeep_runs (")
    assert "PRIMARY KEY (run_id),\n\tSHARD KEY (run_id)\n)" in sql
    assert "ENGINE" not in sql and "FOREIGN KEY" not in sql


def test_topics_are_sharded_with_their_memory(kernel):
    sql = _create(kernel, "memories:topics")
    assert "SHARD KEY (memory_id)" in sql
    assert "FOREIGN KEY" not in sql


def test_short_text_is_binary_and_no_secondary_index_is_unique(kernel):
    sql = _create(kernel, "sessions")
    assert "session_id VARBINARY(1020) NOT NULL" in sql
    for table in kernel.all_tables():
        assert not any(ix.unique for ix in table.indexes), table.name


def test_a_mariadb_server_gets_the_same_tables_without_singlestore_words(kernel):
    kernel.native = False
    sql = _create(kernel, "runs")
    assert sql.startswith("CREATE TABLE IF NOT EXISTS") and "SHARD KEY" not in sql
