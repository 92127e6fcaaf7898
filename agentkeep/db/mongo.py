"""`agentkeep.db.mongo` as before: the module moved to `agentkeep.db.backends.mongo.db`; this name is
that module itself (MongoDb, AsyncMongoDb, and the rest of it), so old imports keep working."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("agentkeep.db.backends.mongo.db")
