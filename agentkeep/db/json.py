"""`agentkeep.db.json` as before: the backend moved to `agentkeep.db.backends.json`; its public names are
here too, so old imports keep working."""

from agentkeep.db.backends.json.db import JsonDb
from agentkeep.db.backends.json.kernel import JsonKernel
from agentkeep.db.backends.json.layout import _lost_race

__all__ = ['JsonDb', 'JsonKernel', '_lost_race']
