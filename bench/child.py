"""One benchmark case in its own process: `python -m bench.child SPEC.json`.

SPEC: {"kind": "agentkeep"|"baseline", "backend", "case", "sizes" (this benchmark's),
"tmp" (an empty dir owned by this case), "shared" (dict), "budget" (s), "out" (result path),
"schema_prefix" (server backends: the names of this case's schemas, databases on MySQL,
start with it; they are dropped when the case ends)}.
The result JSON: metrics, notes, error (traceback), infeasible, rss_mb (ru_maxrss at the
end), wall_s.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from bench.common import Infeasible, peak_rss_mb, perf, server


class Ctx:
    def __init__(self, spec: dict):
        self.backend = spec.get("backend")
        self.case = spec.get("case")
        self.sizes = spec["sizes"]
        self.tmp = spec["tmp"]
        self.shared = spec.get("shared") or {}
        self.budget = float(spec["budget"])
        self.metrics: dict = {}
        self.notes: list[str] = []
        self._dbs: list = []
        self.schema_prefix = spec.get("schema_prefix") or "bench_"
        self.schemas: list[str] = []  # schemas the raw psycopg / pymysql baselines create

    def schema(self) -> str:
        """A new schema name for a raw server baseline (dropped after the case)."""
        name = f"{self.schema_prefix}raw{len(self.schemas)}"
        self.schemas.append(name)
        return name

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    def note(self, text) -> None:
        if text:
            self.notes.append(str(text))

    def seed_note(self, seconds: float, extra: str = "") -> None:
        self.metrics["seed_s"] = seconds  # shown in the Notes column
        if extra:
            self.note(f"seeding {seconds:.1f} s ({extra})")

    def fresh_db(self, name: str = "db"):
        from bench.cases import Blocking, make_db, wrapper_us

        db = make_db(self.backend, self.path(name))
        if isinstance(db, Blocking) and not self._dbs and self.case != "async_append":
            self.note(f"blocking wrapper: {wrapper_us(db.loop):.0f} µs per call "
                      f"(run_until_complete of an empty coroutine; in the figures)")
        self._dbs.append(db)
        return db

    def close_all(self) -> None:
        from bench.cases import close, close_loop

        for db in self._dbs:
            try:
                close(db)
            except Exception:  # noqa: BLE001 - closing twice or after a failure
                pass
        self._dbs.clear()
        import bench.cases as cases

        while cases.CLEANUPS:
            try:
                cases.CLEANUPS.pop()()
            except Exception as exc:  # noqa: BLE001 - informative only
                self.note(f"cleanup failed: {type(exc).__name__}: {exc}")
        try:
            close_loop()  # the async dbs' private event loop, if the case made one
        except Exception as exc:  # noqa: BLE001 - informative only
            self.note(f"closing the event loop: {type(exc).__name__}: {exc}")

    def drop_schemas(self) -> None:
        import bench.cases as cases

        names = [*cases.SCHEMAS, *self.schemas]
        if names:
            try:
                server(self.backend).drop_schemas(names)
            except Exception as exc:  # noqa: BLE001 - the parent sweeps the prefix again
                self.note(f"dropping schemas failed: {type(exc).__name__}: {exc}")


def run(spec: dict) -> dict:
    ctx = Ctx(spec)
    import bench.cases as cases

    cases.SCHEMA_PREFIX = ctx.schema_prefix
    result: dict = {"error": None, "infeasible": None}
    t0 = perf()
    try:
        if spec["kind"] == "baseline":
            from bench.baselines import BASELINES

            BASELINES[spec["case"]][1](ctx)
        else:
            from bench.cases import CASES

            CASES[spec["case"]](ctx)
    except Infeasible as exc:
        result["infeasible"] = str(exc)
    except BaseException:  # noqa: BLE001 - reported, the parent goes on
        result["error"] = traceback.format_exc()
    finally:
        ctx.close_all()
        ctx.drop_schemas()
    result.update(metrics=ctx.metrics, notes=ctx.notes, rss_mb=peak_rss_mb(), wall_s=perf() - t0)
    return result


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    result = run(spec)
    with open(spec["out"], "w") as f:
        json.dump(result, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
