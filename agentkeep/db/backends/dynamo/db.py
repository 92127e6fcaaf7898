"""DynamoDb: agentkeep on Amazon DynamoDB (boto3's low-level client), one DynamoDB table per
agentkeep table. The layout and its reasons are in docs/dynamodb.md; in short:

- Items: partition key `pk` = the encoded record key; one attribute per column (times as
  epoch microseconds, JSON columns as JSON text, None as an absent attribute).
- Every spec index is a GSI: partition = its equality fields, encoded (a constant when it has
  none), sort = an order-preserving string of its order field and the record key, so a list
  page is one Query read in order that stops at the limit. `by_key` (KEYS_ONLY, one
  partition) walks a table in key order for exports and key ranges.
- List-valued columns (`multi`, memory topics) get a side table of marker items with GSIs by
  (value, user) and (user, value).
- Items past ~350 KB move their largest JSON/text columns into chunk items, written before
  the item that points at them and deleted after it stops doing so.
- Every write carries a fresh token `_w`; a read-modify-write puts on condition that the
  token is unchanged. User text only ever travels as an expression attribute value.
"""

from __future__ import annotations

from typing import Any

from agentkeep.db import options
from agentkeep.db._sync.domain import Db
from agentkeep.db.backends.dynamo.kernel import DynamoKernel
from agentkeep.db.connection import (
    CONNECT_TIMEOUT_S,
)
from agentkeep.db.drivers import driver_for
from agentkeep.db.errors import InvalidInputError


_loader: Any = None  # botocore's loader of service models, shared by every DynamoDb


def _boto3_session() -> Any:
    """A new boto3 session (its own credentials and config, read now) that shares one loader
    of botocore's service models with every other: a client from a new session reads and
    parses those JSON models again, 150-200 ms a DynamoDb, 11-17 ms with the loader kept."""
    global _loader
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    if _loader is None:
        _loader = core.get_component("data_loader")
    else:
        core.register_component("data_loader", _loader)
    return boto3.session.Session(botocore_session=core)


def _retry_connect_once(caught_exception: Exception | None = None, attempts: int = 1, **_: Any) -> None:
    """A connection that could not be made (refused, DNS, connect timeout) is tried twice,
    not the ten times throttling gets: ten backed-off attempts at a dead endpoint take
    about a minute. Raising here ends botocore's retries."""
    from botocore.exceptions import ConnectionError as ConnectFailed

    if isinstance(caught_exception, ConnectFailed) and attempts >= 2:
        raise caught_exception


class DynamoDb(Db):
    """agentkeep on Amazon DynamoDB: one table per agentkeep table, named `table_prefix` + "_"
    + name (override per table: `session_table="..."`), created on first use."""

    def __init__(self, region_name: str | None = None, endpoint_url: str | None = None, table_prefix: str = "agentkeep",
                 id: str | None = None, aws_access_key_id: str | None = None,
                 aws_secret_access_key: str | None = None, aws_session_token: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, **tables: str) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix=table_prefix, tables=tables)
        strings = {"region_name": region_name, "endpoint_url": endpoint_url, "aws_access_key_id": aws_access_key_id,
                   "aws_secret_access_key": aws_secret_access_key, "aws_session_token": aws_session_token}
        for name, value in strings.items():
            options.text(value, name, optional=True)
        with driver_for("DynamoDb", "dynamodb"):
            from botocore.config import Config

            session = _boto3_session()
        sep = "" if not table_prefix or table_prefix[-1] in "_-." else "_"
        if region_name is None and session.region_name is None and endpoint_url is not None:
            region_name = "us-east-1"  # a local emulator: any region will do
        if region_name is None and session.region_name is None:
            raise InvalidInputError("DynamoDb needs region_name= (or AWS_DEFAULT_REGION / an AWS profile's region)")
        client = session.client(
            "dynamodb", region_name=region_name, endpoint_url=endpoint_url, aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key, aws_session_token=aws_session_token,
            config=Config(retries={"max_attempts": 10, "mode": "standard"}, max_pool_connections=64,
                          connect_timeout=options.seconds(connect_timeout)),
        )
        client.meta.events.register_first("needs-retry.dynamodb", _retry_connect_once)
        region = client.meta.region_name
        kernel = DynamoKernel(client, region=region, endpoint_url=endpoint_url, prefix=table_prefix + sep)
        super().__init__(kernel, id=id, table_prefix=table_prefix + sep, tables=overrides)


__all__ = ["DynamoDb", "DynamoKernel"]
