"""`agentkeep.db.gcs_json` as before: the module moved to `agentkeep.db.backends.json.gcs`; this name is
that module itself (GcsJsonDb, and the rest of it), so old imports keep working."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("agentkeep.db.backends.json.gcs")
