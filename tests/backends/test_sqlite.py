"""SqliteDb specifics: one connection per thread, and closing while other threads work."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CLOSE_WHILE_OTHERS_WRITE = textwrap.dedent('''
    import sys, threading, time
    from agentkeep.db.sqlite import SqliteDb
    from agentkeep.db import Session

    db = SqliteDb(db_file=sys.argv[1])
    db.upsert_session(Session(user_id="a"))
    stop = False

    def work():
        while not stop:
            db.list_sessions(limit=50)
            db.upsert_session(Session(user_id="a"))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(300):
        db.close()
        time.sleep(0.001)
    stop = True
    for t in threads:
        t.join()
    print(len(db.list_sessions(limit=1000).items) > 1)
''')


def test_closing_while_other_threads_use_their_connections(tmp_path):
    """close() waits for a statement another thread is running (a tracing exporter's, say)
    instead of closing its connection under it, which crashed the process; the threads
    then carry on, on new connections. In a child process, so a crash fails this test."""
    done = subprocess.run([sys.executable, "-c", CLOSE_WHILE_OTHERS_WRITE, str(tmp_path / "c.db")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"
