"""InMemoryDb (db.py): the in-process RowTable of agentkeep/db/rowstore.py behind a lock."""
