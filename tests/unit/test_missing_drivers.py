"""A backend whose driver is not installed says which extra installs it, in Python (importing
or constructing the db) and on the command line (one line, exit status 2). Each case runs in
a fresh interpreter where an import hook makes the driver's modules impossible to import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import contextlib, io, json, sys

BLOCKED = {blocked!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
out = {{"python": None}}
try:
    from agentkeep.db import {name}
    {name}({args})
except ModuleNotFoundError as exc:
    out["python"] = str(exc)
if {url!r}:
    from agentkeep.cli import app

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            app(["tables", "--db", {url!r}], prog_name="agentkeep")
        except SystemExit as exc:
            out["exit"] = exc.code
    out["stderr"] = err.getvalue()
print(json.dumps(out))
"""

CASES = {
    # class: (constructor arguments, modules made missing, the extra, a URL for the CLI)
    "AsyncSqliteDb": ("db_file=':memory:'", ["aiosqlite"], "sqlite", None),
    "JsonDb": ("'memory://x'", ["fsspec"], "json", "json://{tmp}/keep"),
    "JsonDb-s3": ("'s3://bucket/x'", ["s3fs"], "s3", "json+s3://bucket/x"),
    "GcsJsonDb": ("'bucket'", ["gcsfs"], "gcs", "json+gs://bucket/x"),
    "PostgresDb": ("", ["psycopg"], "postgres", "postgresql://u@127.0.0.1:5432/db"),
    "AsyncPostgresDb": ("", ["psycopg_pool"], "postgres", None),
    "MysqlDb": ("", ["pymysql"], "mysql", "mysql://root@127.0.0.1:3306/db"),
    "AsyncMysqlDb": ("", ["aiomysql"], "mysql", None),
    "SingleStoreDb": ("", ["pymysql"], "singlestore", "singlestoredb://root@127.0.0.1:3306/db"),
    "AsyncSingleStoreDb": ("", ["aiomysql"], "singlestore", None),
    "MongoDb": ("", ["pymongo", "bson"], "mongo", "mongodb://127.0.0.1:27017/db"),
    "AsyncMongoDb": ("", ["pymongo", "bson"], "mongo", None),
    "RedisDb": ("", ["redis"], "redis", "redis://127.0.0.1:6379/0"),
    "AsyncRedisDb": ("", ["redis"], "redis", None),
    "DynamoDb": ("region_name='us-east-1'", ["boto3", "botocore"], "dynamodb", "dynamodb://us-east-1/ak"),
    "FirestoreDb": ("project_id='p'", ["google.cloud.firestore"], "firestore", "firestore://p"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_missing_driver_names_its_extra(case, tmp_path):
    args, blocked, extra, url = CASES[case]
    name = case.split("-")[0]
    code = SCRIPT.format(blocked=blocked, name=name, args=args, url=url and url.format(tmp=tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)

    install = f"pip install 'agentkeep[{extra}]'"
    assert out["python"] is not None, f"{name}({args}) worked without {blocked}"
    assert install in out["python"] and f"-e '.[{extra}]'" in out["python"], out["python"]
    assert "bson" not in out["python"].split(":")[0], out["python"]  # names pymongo, never bson
    if url:
        assert out["exit"] == 2, out
        lines = out["stderr"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and install in lines[0], out["stderr"]
