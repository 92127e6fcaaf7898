"""`agentkeep.db.sql.base` as before: the module moved to `agentkeep.db.backends.sql.base`; this name is
that module itself (SqlBase, and the rest of it), so old imports keep working."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("agentkeep.db.backends.sql.base")
