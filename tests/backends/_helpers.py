"""Shared by the server backends' tests."""


def statements(db, call):
    """The SELECT (and UPDATE ... SELECT) statements a domain call runs on a SQL kernel, with
    their parameters, so a test can EXPLAIN exactly what the kernel sent (plain EXPLAIN
    plans a statement without running it)."""
    seen = []
    run = db.kernel._run

    def record(c, values, *, write):
        if c.sql.lstrip().upper().startswith(("SELECT", "UPDATE")):
            seen.append((c.sql, db.kernel._params(c, values)))
        return run(c, values, write=write)

    db.kernel._run = record
    try:
        call()
    finally:
        db.kernel._run = run
    return seen
