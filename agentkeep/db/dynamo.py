"""`agentkeep.db.dynamo` as before: the backend moved to `agentkeep.db.backends.dynamo`; its public names are
here too, so old imports keep working."""

from agentkeep.db.backends.dynamo.db import DynamoDb
from agentkeep.db.backends.dynamo.kernel import DynamoKernel

__all__ = ['DynamoDb', 'DynamoKernel']
