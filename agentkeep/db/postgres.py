"""`agentkeep.db.postgres` as before: the module moved to `agentkeep.db.backends.sql.postgres`; this name is
that module itself (PostgresDb, AsyncPostgresDb, and the rest of it), so old imports keep working."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("agentkeep.db.backends.sql.postgres")
