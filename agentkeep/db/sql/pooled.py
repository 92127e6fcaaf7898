"""`agentkeep.db.sql.pooled` as before: the module moved to `agentkeep.db.backends.sql.pooled`; this name is
that module itself (PooledKernel, and the rest of it), so old imports keep working."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("agentkeep.db.backends.sql.pooled")
