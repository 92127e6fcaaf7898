"""`agentkeep.db.in_memory` as before: the module moved to `agentkeep.db.backends.in_memory.db`; this name is
that module itself (InMemoryDb, and the rest of it), so old imports keep working."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("agentkeep.db.backends.in_memory.db")
