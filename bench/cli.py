"""`python -m bench`: runs every (backend, benchmark) case in its own process and prints
one table. Measurement only: nothing here fails on a slow figure (exit status 0 unless
the harness itself is misused)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

from bench import report
from bench.cases import SERVICE_BACKENDS as SERVICE_BACKEND_NAMES
from bench.cases import not_run, service_backend
from bench.common import base_backend, server
from bench.sizes import BENCHMARKS, overridden, parse_overrides, sizes_for

BACKENDS = ["inmemory", "sqlite", "json", "postgres", "mysql"]  # the default; postgres, mysql: when their server answers
# the async twins (AsyncSqliteDb, ...), opt-in: every benchmark again on three more backends, two
# of them server ones, would make a full run much longer
ASYNC_BACKENDS = ["sqlite_async", "postgres_async", "mysql_async"]
# the document, key-value and object-storage backends, opt-in: on their emulators (all but
# Redis) the figures are the emulator's, not the service's
SERVICE_BACKENDS = list(SERVICE_BACKEND_NAMES)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE_CASES = [  # (raw case, the benchmark it is the baseline of)
    ("raw_new_session_full", "new_session"),
    ("raw_new_session_normal", "new_session"),
    ("raw_list_sessions", "list_sessions"),
]
SERVERS = {  # server backend (and its async twin) -> (the variable naming its server, its raw driver, the raw
    # cases' results key)
    "postgres": ("AGENTKEEP_POSTGRES_URL", "psycopg", report.RAW_PG),
    "mysql": ("AGENTKEEP_MYSQL_URL", "pymysql", report.RAW_MY),
}
SERVER_BASELINE_CASES = {  # raw driver cases, run when their server's backend (or its async twin) is
    "postgres": [("raw_pg_new_session", "new_session"), ("raw_pg_list_sessions", "list_sessions"),
                 ("raw_pg_spans", "spans")],
    "mysql": [("raw_mysql_new_session", "new_session"), ("raw_mysql_list_sessions", "list_sessions")],
}


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help="comma-separated: inmemory,sqlite,json,postgres,mysql (the default) and the async "
                         "twins sqlite_async,postgres_async,mysql_async (AsyncSqliteDb, AsyncPostgresDb, "
                         "AsyncMysqlDb; only when named); the server backends are skipped with a message when "
                         "the server of AGENTKEEP_POSTGRES_URL or AGENTKEEP_MYSQL_URL is not reachable; "
                         f"and, only when named, {','.join(SERVICE_BACKENDS)} (their servers and emulators "
                         "are started as the test suite starts them)")
    ap.add_argument("--only", default="", help=f"comma-separated benchmarks: {','.join(BENCHMARKS)}")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds per backend")
    ap.add_argument("--sizes", default="", help="override sizes: [backend:]bench.key=value,... (see bench/README.md)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    ap.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds a seeding or measuring loop may take before the size is reported "
                         "infeasible (default 240, quick 60)")
    ap.add_argument("--timeout", type=float, default=None, help="hard limit per case in seconds (default 1200, quick 300)")
    ap.add_argument("--no-baselines", action="store_true", help="skip the raw sqlite3, psycopg and pymysql baselines")
    ap.add_argument("--workdir", default=None, help="where the temporary dbs go (default: a new dir in $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the workdir (dbs, dumps, child logs)")
    args = ap.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    known = BACKENDS + ASYNC_BACKENDS + SERVICE_BACKENDS
    bad = [b for b in args.backends if b not in known]
    if bad:
        ap.error(f"unknown backend(s) {bad}; choose from {known}")
    args.only = [b.strip() for b in args.only.split(",") if b.strip()] or list(BENCHMARKS)
    bad = [b for b in args.only if b not in BENCHMARKS]
    if bad:
        ap.error(f"unknown benchmark(s) {bad}; choose from {BENCHMARKS}")
    args.only = [b for b in BENCHMARKS if b in args.only]
    args.overrides = parse_overrides(args.sizes)
    if args.budget is None:
        args.budget = 60.0 if args.quick else 240.0
    if args.timeout is None:
        args.timeout = 300.0 if args.quick else 1200.0
    return args


class Runner:
    def __init__(self, args, console):
        self.args, self.console = args, console
        self.workdir = args.workdir or tempfile.mkdtemp(prefix="agentkeep-bench-")
        os.makedirs(self.workdir, exist_ok=True)
        self.n = 0
        self.token = secrets.token_hex(4)  # this run's schemas / databases are bench_<token>_<case no>_...

    def run_case(self, kind, backend, case, sizes, shared=None, budget=None) -> dict:
        self.n += 1
        tag = f"{backend}-{case}-{self.n}"
        tmp = os.path.join(self.workdir, tag)
        os.makedirs(tmp)
        spec_path = os.path.join(self.workdir, f"{tag}.spec.json")
        out = os.path.join(self.workdir, f"{tag}.result.json")
        log = os.path.join(self.workdir, f"{tag}.log")
        prefix = f"bench_{self.token}_{self.n}_"
        spec = dict(kind=kind, backend=backend, case=case, sizes=sizes, tmp=tmp, shared=shared or {},
                    budget=budget or self.args.budget, out=out, schema_prefix=prefix)
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
        t0 = time.perf_counter()
        result = None
        try:
            with open(log, "wb") as lf:
                proc = subprocess.run([sys.executable, "-m", "bench.child", spec_path], cwd=REPO, env=env,
                                      stdout=lf, stderr=subprocess.STDOUT, timeout=self.args.timeout)
            if os.path.exists(out):
                with open(out) as f:
                    result = json.load(f)
            else:
                result = {"error": f"child exited with status {proc.returncode} and no result:\n{_tail(log)}"}
        except subprocess.TimeoutExpired:
            result = {"infeasible": f"timed out after {self.args.timeout:.0f} s (--timeout)"}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        result.setdefault("metrics", {})
        result.setdefault("notes", [])
        if server(backend):
            try:  # the child drops its schemas; this catches a child killed before it could
                left = server(backend).drop_schemas_with_prefix(prefix)
                if left:
                    result["notes"].append(f"schemas left by the child dropped: {', '.join(left)}")
            except Exception as exc:  # noqa: BLE001 - never fail the run over cleanup
                result["notes"].append(f"could not drop schemas {prefix}*: {type(exc).__name__}: {exc}")
        result.setdefault("error", None)
        result.setdefault("infeasible", None)
        result["case_wall_s"] = time.perf_counter() - t0  # incl. process start and temp-dir cleanup
        self._progress(backend, case, result)
        return result

    def _progress(self, backend, case, res):
        m = {k: v for k, v in res["metrics"].items() if isinstance(v, (int, float))}
        figs = ", ".join(f"{k}={v}" if isinstance(v, bool) else f"{k}={v:,.3g}" if isinstance(v, float)
                         else f"{k}={v:,}" for k, v in m.items())
        status = ("[red]ERROR[/red] " + res["error"].strip().splitlines()[-1]) if res.get("error") else (
            "[yellow]INFEASIBLE[/yellow] " + res["infeasible"] if res.get("infeasible") else "")
        rss = res.get("rss_mb")
        self.console.print(
            f"  {backend:14} {case:23} {res.get('wall_s') or 0:7.1f} s (+{res['case_wall_s'] - (res.get('wall_s') or 0):.1f})"
            + (f"  {rss:5.0f} MB" if rss else "         ")
            + f"  {figs} {status}",
            highlight=False, markup=True, soft_wrap=True,
        )


def _tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def main(argv=None) -> int:
    from rich.console import Console

    args = parse_args(sys.argv[1:] if argv is None else argv)
    out_console = Console()
    if not out_console.is_terminal:
        out_console = Console(width=220)  # piped to a file: do not wrap the table at 80 columns
    log_console = Console(stderr=True)
    runner = Runner(args, log_console)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    gsizes = sizes_for(args.quick, args.overrides, None)
    results: dict = {}
    global_notes: list[str] = []
    log_console.print(f"[bold]agentkeep bench[/bold] ({'quick' if args.quick else 'full'}), workdir {runner.workdir}")
    server_info = {}  # server backend ("postgres", also for postgres_async) -> what its probe said
    probes = {}
    for backend in list(args.backends):
        base = base_backend(backend)
        if base not in SERVERS:
            continue
        if base not in probes:  # one probe per server
            probes[base] = server(base).probe()
            if probes[base][0]:
                server_info[base] = probes[base][1]
                log_console.print(f"{base}: {server(base).shown()} ({probes[base][1]})", highlight=False)
        ok, info = probes[base]
        if not ok:
            args.backends.remove(backend)
            msg = (f"{backend}: SKIPPED, the server at {server(base).shown()} is not reachable ({info}); "
                   f"start it or set {SERVERS[base][0]}")
            log_console.print(f"[yellow]{msg}[/yellow]", highlight=False, markup=True, soft_wrap=True)
            global_notes.append(msg)
    for backend in [b for b in args.backends if b in SERVICE_BACKENDS]:
        entry = service_backend(backend)
        why = entry.unavailable()  # starts its server or emulator here, once, for every case
        if why:
            args.backends.remove(backend)
            msg = f"{backend}: SKIPPED, {why}"
            log_console.print(f"[yellow]{msg}[/yellow]", highlight=False, markup=True, soft_wrap=True)
            global_notes.append(msg)
        else:
            global_notes.append(f"{backend} ran against {entry.target()}")
    if not args.backends:
        log_console.print("no backend left to run; nothing measured")
        if not args.keep:
            shutil.rmtree(runner.workdir, ignore_errors=True)
        return 0
    try:
        if not args.no_baselines:
            for case, bench in BASELINE_CASES:
                if bench in args.only:
                    results[(report.RAW, case)] = runner.run_case("baseline", report.RAW, case, gsizes[bench])
            bases = {base_backend(b) for b in args.backends}
            for backend, cases in SERVER_BASELINE_CASES.items():
                raw = SERVERS[backend][2]
                for case, bench in cases:
                    if backend in bases and bench in args.only:
                        results[(raw, case)] = runner.run_case("baseline", raw, case, gsizes[bench])
        dumps: dict[int, dict] = {}
        for backend in args.backends:
            bsizes = sizes_for(args.quick, args.overrides, backend)
            for bench in args.only:
                why = not_run(backend, bench)
                if why:
                    results[(backend, bench)] = {"skipped": True, "metrics": {}, "notes": [why]}
                    continue
                shared = {}
                if bench == "export_import":
                    shared = dumps.get(bsizes[bench]["sessions"]) or _prepare_dump(
                        runner, args, bsizes[bench], dumps, global_notes)
                res = runner.run_case("agentkeep", backend, bench, bsizes[bench], shared)
                diff = overridden(args.quick, args.overrides, backend, bench)
                res["overridden"] = diff
                if diff:
                    res["notes"].insert(0, "sizes overridden: " + ", ".join(f"{k}={v}" for k, v in diff.items()))
                results[(backend, bench)] = res
    finally:
        if not args.keep:
            shutil.rmtree(runner.workdir, ignore_errors=True)
    wall = time.perf_counter() - t_start

    rows = report.build_rows(args.only, gsizes)
    show_raw = not args.no_baselines and any(k[0] == report.RAW for k in results)
    shown = {be for be, (_, _, raw) in SERVERS.items() if not args.no_baselines and any(k[0] == raw for k in results)}
    header, body, foot = report.build_table(rows, args.backends, results, show_raw, "postgres" in shown,
                                            "mysql" in shown)
    env = (f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, Python {platform.python_version()}, "
           f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, {platform.machine()}, "
           f"{'--quick' if args.quick else 'full sizes'}, total {wall:.0f} s, "
           f"load average {load_start:.1f} at start / {os.getloadavg()[0]:.1f} at end "
           f"(other processes skew timings)"
           + "".join(f"; {be}: {info}, same machine over TCP ({server(be).shown()})"
                     for be, info in server_info.items()))
    title = "agentkeep benchmarks"
    drivers = "".join(f"raw {SERVERS[be][1]} for the {' and '.join(c for c in args.backends if base_backend(c) == be)} "
                      f"column, " for be in SERVERS if be in shown)
    legend = (("Ratios in brackets: agentkeep's time per operation / the raw baseline's for the same work: "
               f"{drivers}raw sqlite3 for the others (1.0× = as fast as the raw "
               "driver; FULL and NORMAL = the raw sqlite3 run's synchronous setting). " if shown else
               "Ratios in brackets: agentkeep's time per operation / raw sqlite3's for the same work "
               "(1.0× = as fast as raw sqlite3; F/FULL and NORMAL = the raw run's synchronous setting). ")
              + "✓/✗: against the project's target (informational only). "
              "* = this backend ran other sizes (--sizes; see its note).")
    note_lines = _note_lines(results, args.backends, foot, global_notes)

    out_console.print(report.to_rich(header, body, title))
    out_console.print(f"[dim]{env}[/dim]", highlight=False)
    out_console.print(f"[dim]{legend}[/dim]", highlight=False)
    for line in note_lines:
        out_console.print(line, highlight=False, markup=False, soft_wrap=True)

    if args.markdown:
        md = [f"# {title}", "", env, "", report.to_markdown(header, body), "", legend, "", "## Notes", ""]
        md += [f"- {line}" for line in note_lines]
        tbs = [(k, r["error"]) for k, r in results.items() if r.get("error")]
        if tbs:
            md += ["", "## Errors", ""]
            for (be, case), tb in tbs:
                md += [f"### {be} / {case}", "", "```", "\n".join(tb.strip().splitlines()[-30:]), "```", ""]
        with open(args.markdown, "w") as f:
            f.write("\n".join(md) + "\n")
        log_console.print(f"markdown written to {args.markdown}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "quick": args.quick, "sizes": gsizes, "overrides": args.overrides,
                       "results": {f"{k[0]}/{k[1]}": v for k, v in results.items()}}, f, indent=2, default=str)
        log_console.print(f"json written to {args.json}")
    return 0


def _prepare_dump(runner, args, size: dict, dumps: dict, global_notes: list) -> dict:
    """Builds the export/import dataset once per size (InMemoryDb, else SqliteDb, by a loop)
    and exports it; every backend's case is then seeded by import_jsonl of that dump."""
    n = size["sessions"]
    path = os.path.join(runner.workdir, f"dump-{n}.jsonl")
    problems = []
    for maker in ("inmemory", "sqlite"):
        res = runner.run_case("agentkeep", maker, "prepare_dump", size, {"dump_path": path},
                              budget=max(args.budget, 600.0))
        if not res.get("error") and not res.get("infeasible") and os.path.exists(path):
            m = res["metrics"]
            global_notes.append(
                f"export/import dataset: {n:,} sessions with 1 run each (~0.5 KB of text per run), "
                f"built by a loop on {maker} in {m.get('seed_s', 0):.0f} s and exported to a "
                f"{m.get('bytes', 0) / 2**20:.0f} MB dump ({m.get('count', 0):,} records); each backend's "
                f"source db is seeded by import_jsonl of it."
            )
            dumps[n] = {"dump_path": path, "dump_from": maker}
            return dumps[n]
        problems.append(f"{maker}: " + (res.get("infeasible") or res["error"].strip().splitlines()[-1]))
    global_notes.append("export/import dataset could not be prepared as a dump (" + "; ".join(problems)
                        + "); each backend seeds its source db by a loop instead.")
    dumps[n] = {}
    return dumps[n]


def _note_lines(results, backends, foot, global_notes) -> list[str]:
    lines = [f"[{marker}] {text}" for marker, text in foot.items]
    lines += global_notes
    order = [report.RAW, report.RAW_PG, report.RAW_MY, *backends]
    for (be, case), res in sorted(results.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        notes = list(res.get("notes") or [])
        if res.get("infeasible"):
            notes.append("INFEASIBLE: " + res["infeasible"])
        if notes:
            name = {report.RAW: "raw sqlite3", report.RAW_PG: "raw psycopg", report.RAW_MY: "raw pymysql"}.get(be, be)
            lines.append(f"{name} / {case}: " + "; ".join(notes))
    return lines
