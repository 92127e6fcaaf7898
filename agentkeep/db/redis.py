"""`agentkeep.db.redis` as before: the backend moved to `agentkeep.db.backends.redis`; its public names are
here too, so old imports keep working."""

from agentkeep.db.backends.redis.codec import decode, encode
from agentkeep.db.backends.redis.db import AsyncRedisDb, RedisDb
from agentkeep.db.backends.redis.layout import check_prefix, parse_url

__all__ = ['AsyncRedisDb', 'RedisDb', 'check_prefix', 'decode', 'encode', 'parse_url']
