"""`agentkeep.db.sqlite` as before: the module moved to `agentkeep.db.backends.sql.sqlite`; this name is
that module itself (SqliteDb, AsyncSqliteDb, and the rest of it), so old imports keep working."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("agentkeep.db.backends.sql.sqlite")
