"""Redis: the value encoding (codec.py), the layout and query planning (layout.py), the Lua
scripts (lua/, loaded by scripts.py), the kernel (_async/kernel.py, its sync twin generated)
and RedisDb / AsyncRedisDb (db.py)."""
