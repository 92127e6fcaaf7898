"""RedisDb (and AsyncRedisDb) on redis-py: records as hashes, every spec index as a sorted
set read by lexicographic range, every multi-key write one Lua script.

    RedisDb(db_url="redis://127.0.0.1:6379/0", prefix="agentkeep")

Layout (P = prefix, t = the table's physical name, K = the record's encoded key):
- `P:t:r:K` a hash, one field per column. Scalar columns hold an order-preserving byte
  encoding (below), JSON columns their JSON text; list columns named in `multi` also keep
  `#field`, the encodings of their values, for the scripts that maintain the indexes.
- `P:t:k` the table's key index; `P:t:i:f1,f2` one per spec index; `P:t:m:f` and
  `P:t:m:user_id,f` for each `multi` field. All are sorted sets whose members (score 0)
  are the encodings of (index fields..., key fields...) concatenated, so ZRANGEBYLEX with
  LIMIT serves an equality prefix, a range on the next field, the order, the keyset
  position and the limit, as `rowstore.RowTable` does in memory.
- `P:_:indexes` the names of the sorted sets that are complete; `P:_:lock` the schema lock.

Encoding of one value (each ends with \\x00, which occurs nowhere else in it): None is
\\x01\\x00, so it sorts lowest; any other value is \\x02 + payload + \\x00. Strings are UTF-8
with \\x01 escaped as \\x01\\x02 and \\x00 as \\x01\\x01, so byte order is code point order and
no text can end a component early, reach another key space or act as a glob (the store
is never asked for KEYS or SCAN). Integers (and times, as microseconds since the epoch)
are a sign-and-length byte and the decimal digits (complemented when negative), floats
the 16 hex digits of their IEEE bits turned to sort as numbers, dates ISO text, bools 0/1.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

from agentkeep.db import options
from agentkeep.db._async.domain import AsyncDb
from agentkeep.db._sync.domain import Db
from agentkeep.db.connection import CONNECT_TIMEOUT_S
from agentkeep.db.drivers import driver_for
from agentkeep.db.errors import InvalidInputError
from agentkeep.db.jsontext import dumps as compact_json
from agentkeep.db.query import Cond, Query, after_filter, matches_all, row_key
from agentkeep.db.tables import TableSpec

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MICRO = dt.timedelta(microseconds=1)
NONE = b"\x01\x00"
HIGH = b"\xff"  # above every tag byte: closes a prefix range
JSON_NULL = b"null\x00"
MAX_PREFIXES = 32  # `in` values on index fields expand into at most this many ranges
MAX_DIGITS = 40
_NINES = str.maketrans("0123456789", "9876543210")
_UNESCAPE = re.compile(b"\x01([\x01\x02])")
_RANGE_OPS = ("lt", "lte", "gt", "gte")


# -- value codecs ------------------------------------------------------------------------


def _esc(b: bytes) -> bytes:
    if b"\x00" in b or b"\x01" in b:
        b = b.replace(b"\x01", b"\x01\x02").replace(b"\x00", b"\x01\x01")
    return b


def _unesc(b: bytes) -> bytes:
    return _UNESCAPE.sub(lambda m: b"\x00" if m.group(1) == b"\x01" else b"\x01", b) if b"\x01" in b else b


def _enc_int(v: int) -> bytes:
    if v >= 0:
        s = str(v)
        head = 0x50 + len(s)
    else:
        s = str(-v).translate(_NINES)
        head = 0x4F - len(s)
    if len(s) > MAX_DIGITS:
        raise InvalidInputError(f"integer {v} is out of range (at most {MAX_DIGITS} digits)")
    return bytes((2, head)) + s.encode() + b"\x00"


def _dec_int(p: bytes) -> int:
    if p[0] >= 0x50:
        return int(p[1:])
    return -int(p[1:].decode().translate(_NINES))


def _enc_float(v: float) -> bytes:
    bits = struct.unpack(">Q", struct.pack(">d", float(v) + 0.0))[0]  # + 0.0: -0.0 is 0.0
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
    return b"\x02%016x\x00" % bits


def _dec_float(p: bytes) -> float:
    bits = int(p, 16)
    bits = bits & 0x7FFFFFFFFFFFFFFF if bits >> 63 else bits ^ 0xFFFFFFFFFFFFFFFF
    return struct.unpack(">d", struct.pack(">Q", bits))[0]


ENCODERS = {
    "str": lambda v: b"\x02" + _esc(v.encode()) + b"\x00",
    "text": lambda v: b"\x02" + _esc(v.encode()) + b"\x00",
    "int": _enc_int,
    "float": _enc_float,
    "bool": lambda v: b"\x021\x00" if v else b"\x020\x00",
    "time": lambda v: _enc_int((v - EPOCH) // MICRO),
    "date": lambda v: b"\x02" + v.isoformat().encode() + b"\x00",
}

# payload (after the tag byte, without the terminator) -> value
DECODERS = {
    "str": lambda p: _unesc(p).decode(),
    "text": lambda p: _unesc(p).decode(),
    "int": _dec_int,
    "float": _dec_float,
    "bool": lambda p: p == b"1",
    "time": lambda p: EPOCH + dt.timedelta(microseconds=_dec_int(p)),
    "date": lambda p: dt.date.fromisoformat(p.decode()),
}


def _col(dec):
    """A column decoder: the raw fields of one column (tag byte first) -> values."""
    return lambda raws: [dec(r[1:]) if r[:1] == b"\x02" else None for r in raws]


def _str_col(raws: list[bytes]) -> list:
    return [None if r[:1] != b"\x02" else r[1:].decode() if b"\x01" not in r else _unesc(r[1:]).decode() for r in raws]


def _int_col(raws: list[bytes]) -> list:
    return [None if r[:1] != b"\x02" else int(r[2:]) if r[1] >= 0x50 else _dec_int(r[1:]) for r in raws]


def _time_col(raws: list[bytes]) -> list:
    td = dt.timedelta
    return [None if r[:1] != b"\x02" else EPOCH + td(microseconds=int(r[2:]) if r[1] >= 0x50 else _dec_int(r[1:]))
            for r in raws]


def _json_col(raws: list[bytes]) -> list:
    return json.loads(b"[" + b",".join(r or b"null" for r in raws) + b"]")


COLUMN_DECODERS = {
    "str": _str_col, "text": _str_col, "int": _int_col, "time": _time_col, "json": _json_col,
    "float": _col(_dec_float), "bool": _col(lambda p: p == b"1"), "date": _col(DECODERS["date"]),
}


def dumps(value: Any) -> bytes:
    # control characters are always escaped in JSON text: it never holds \x00
    return compact_json(value).encode() + b"\x00"


def encode(kind: str, value: Any) -> bytes:
    """A value as stored in its hash field (terminated by \\x00)."""
    if kind == "json":
        return dumps(value)
    if value is None:
        return NONE
    return ENCODERS[kind](value)


def decode(kind: str, raw: bytes | None) -> Any:
    """The inverse of `encode`, given the field without its terminator; None/empty: no field."""
    if not raw:
        return None
    if kind == "json":
        return json.loads(raw)
    if raw[0] == 1:
        return None
    return DECODERS[kind](raw[1:])


# -- Lua ---------------------------------------------------------------------------------

# Shared by every script. Arguments are read in order from ARGV (`arg`, `num`); a layout
# is a JSON list of indexes, each [sorted set, sparse (0/1), hash field, ...] with the
# fields in index order; a `#field` is a list field (one member per value).
LUA_LIB = r"""
local NONE = '\1\0'
local ai = 0
local function arg() ai = ai + 1 return ARGV[ai] end
local function num() return tonumber(arg()) end
local function list(s)
  local out = {}
  for x in string.gmatch(s, '[^,]+') do out[#out + 1] = x end
  return out
end
local function nums(s)
  local out = list(s)
  for i, x in ipairs(out) do out[i] = tonumber(x) end
  return out
end
local function split(s)
  local out, pos = {}, 1
  while pos <= #s do
    local e = string.find(s, '\0', pos, true)
    out[#out + 1] = string.sub(s, pos, e)
    pos = e + 1
  end
  return out
end
local function cmp(a, b)
  if a == b then return 0 end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then if x < y then return -1 end return 1 end
  end
  if #a < #b then return -1 end
  return 1
end
local function members(rk, layout)
  local out = {}
  if redis.call('EXISTS', rk) == 0 then return out end
  local names, pos = {}, {}
  for _, ix in ipairs(layout) do
    for j = 3, #ix do
      if not pos[ix[j]] then names[#names + 1] = ix[j]; pos[ix[j]] = #names end
    end
  end
  local vals = redis.call('HMGET', rk, unpack(names))
  for i, ix in ipairs(layout) do
    local parts = {''}
    for j = 3, #ix do
      local v = vals[pos[ix[j]]]
      if string.byte(ix[j], 1) == 35 then
        local nxt = {}
        for _, x in ipairs(split(v or '')) do
          for _, p in ipairs(parts) do nxt[#nxt + 1] = p .. x end
        end
        parts = nxt
      else
        v = v or NONE
        if j == 3 and ix[2] == 1 and v == NONE then parts = {} end
        for k = 1, #parts do parts[k] = parts[k] .. v end
      end
    end
    local set = {}
    for _, p in ipairs(parts) do set[p] = true end
    out[i] = set
  end
  return out
end
local function reindex(layout, old, new)
  for i, ix in ipairs(layout) do
    local o, n = old[i] or {}, new[i] or {}
    local rem, add = {}, {}
    for m in pairs(o) do if not n[m] then rem[#rem + 1] = m end end
    for m in pairs(n) do if not o[m] then add[#add + 1] = 0; add[#add + 1] = m end end
    if #rem > 0 then redis.call('ZREM', ix[1], unpack(rem)) end
    if #add > 0 then redis.call('ZADD', ix[1], unpack(add)) end
  end
end
local function read_conds()
  local conds = {}
  for i = 1, num() do
    local c = {f = arg(), op = arg(), vals = {}}
    for j = 1, num() do c.vals[j] = arg() end
    conds[i] = c
  end
  return conds
end
local function check(rk, conds)
  if #conds == 0 then return true end
  local names = {}
  for i, c in ipairs(conds) do names[i] = c.f end
  local vals = redis.call('HMGET', rk, unpack(names))
  for i, c in ipairs(conds) do
    local v, t, ok = vals[i] or NONE, c.vals[1], false
    if c.op == 'eq' or c.op == 'in' then
      for _, x in ipairs(c.vals) do if v == x then ok = true end end
    elseif v ~= NONE then
      local d = cmp(v, t)
      ok = (c.op == 'lt' and d < 0) or (c.op == 'lte' and d <= 0) or (c.op == 'gt' and d > 0) or (c.op == 'gte' and d >= 0)
    end
    if not ok then return false end
  end
  return true
end
local function incr(v, by)
  local n = 0
  if v and v ~= NONE then
    local p = string.sub(v, 2, -2)
    if string.byte(p, 1) < 80 then error('agentkeep: cannot increment a negative integer') end
    n = tonumber(string.sub(p, 2))
  end
  n = n + by
  if n < 0 or n > 2^53 then error('agentkeep: counter out of range') end
  local s = string.format('%.0f', n)
  return '\2' .. string.char(80 + #s) .. s .. '\0'
end
local function read_pairs()
  local out = {}
  for i = 1, 2 * num() do out[i] = arg() end
  return out
end
local function keypos(s)
  if string.byte(s, 1) == 61 then return {skip = tonumber(string.sub(s, 2))} end
  return nums(s)
end
local function key_of(m, kp, rprefix)
  if kp.skip then  -- the key is the member's tail: skip the index fields
    local pos = 1
    for i = 1, kp.skip do pos = string.find(m, '\0', pos, true) + 1 end
    return rprefix .. string.sub(m, pos)
  end
  local c, k = split(m), {rprefix}
  for _, p in ipairs(kp) do k[#k + 1] = c[p] end
  return table.concat(k)
end
local function row(rk, fields, out)
  local vals = redis.call('HMGET', rk, unpack(fields))
  if not vals[1] then return false end
  local n = #out
  for i = 1, #fields do out[n + i] = vals[i] or '\0' end
  return true
end
"""

# rkeys... -> the rows that exist, their fields concatenated
LUA_GET = r"""
local fields, out = list(arg()), {}
while ai < #ARGV do row(arg(), fields, out) end
return table.concat(out)
"""

# per range (min, max, count): {members read, last member, rows}
LUA_FIND = r"""
local zkey, rprefix, kp, fields = arg(), arg(), keypos(arg()), list(arg())
local rev = arg() == '1'
local res = {}
for r = 1, num() do
  local lo, hi, count = arg(), arg(), num()
  local ms
  if rev then ms = redis.call('ZREVRANGEBYLEX', zkey, hi, lo, 'LIMIT', 0, count)
  else ms = redis.call('ZRANGEBYLEX', zkey, lo, hi, 'LIMIT', 0, count) end
  local out = {}
  for _, m in ipairs(ms) do row(key_of(m, kp, rprefix), fields, out) end
  res[#res + 1] = #ms
  res[#res + 1] = ms[#ms] or ''
  res[#res + 1] = table.concat(out)
end
return res
"""

# per range (min, max): its count
LUA_COUNT = r"""
local zkey, res = arg(), {}
for r = 1, num() do res[r] = redis.call('ZLEXCOUNT', zkey, arg(), arg()) end
return res
"""

# the distinct values of component `pos` within each range: one hop per value
LUA_DISTINCT = r"""
local zkey, pos, res = arg(), num(), {}
for r = 1, num() do
  local lo, hi = arg(), arg()
  while true do
    local ms = redis.call('ZRANGEBYLEX', zkey, lo, hi, 'LIMIT', 0, 1)
    if #ms == 0 then break end
    local c = split(ms[1])
    if c[pos] ~= NONE then res[#res + 1] = c[pos] end
    lo = '(' .. table.concat(c, '', 1, pos) .. '\255'
  end
end
return res
"""

# groups on component `pos`: {value, count, component pos + 1 of the group's last member}
LUA_GROUP = r"""
local zkey, pos, lo, hi, limit = arg(), num(), arg(), arg(), num()
local res, n = {}, 0
while n < limit do
  local ms = redis.call('ZRANGEBYLEX', zkey, lo, hi, 'LIMIT', 0, 1)
  if #ms == 0 then break end
  local c = split(ms[1])
  local p = table.concat(c, '', 1, pos)
  local last = redis.call('ZREVRANGEBYLEX', zkey, '(' .. p .. '\255', '[' .. p, 'LIMIT', 0, 1)
  res[#res + 1] = c[pos]
  res[#res + 1] = redis.call('ZLEXCOUNT', zkey, '[' .. p, '(' .. p .. '\255')
  res[#res + 1] = split(last[1])[pos + 1] or NONE
  lo = '(' .. p .. '\255'
  n = n + 1
end
return res
"""

# mode i (insert), k (keep existing), r (replace); rows: rkey, pairs -> rows written
LUA_PUT = r"""
local layout, mode, written = cjson.decode(arg()), arg(), 0
while ai < #ARGV do
  local rk = arg()
  local fields = read_pairs()
  local exists = redis.call('EXISTS', rk) == 1
  if mode == 'r' or not exists then
    local old = {}
    if exists then old = members(rk, layout); redis.call('DEL', rk) end
    redis.call('HSET', rk, unpack(fields))
    reindex(layout, old, members(rk, layout))
    written = written + 1
  end
end
return written
"""

# -> false when no record or `where` fails, else the returning fields after the update
LUA_UPDATE = r"""
local layout, rk = cjson.decode(arg()), arg()
local conds = read_conds()
local set = read_pairs()
local inc = read_pairs()
local ret = list(arg())
if redis.call('EXISTS', rk) == 0 or not check(rk, conds) then return false end
local old = members(rk, layout)
for i = 1, #inc, 2 do set[#set + 1] = inc[i]; set[#set + 1] = incr(redis.call('HGET', rk, inc[i]), tonumber(inc[i + 1])) end
if #set > 0 then redis.call('HSET', rk, unpack(set)) end
reindex(layout, old, members(rk, layout))
if #ret == 0 then return '' end
local out = {}
row(rk, ret, out)
return table.concat(out)
"""

# rkeys whose records still meet `where` are deleted -> how many
LUA_DELETE = r"""
local layout = cjson.decode(arg())
local conds = read_conds()
local n = 0
while ai < #ARGV do
  local rk = arg()
  if redis.call('EXISTS', rk) == 1 and check(rk, conds) then
    reindex(layout, members(rk, layout), {})
    redis.call('DEL', rk)
    n = n + 1
  end
end
return n
"""

# bump the parent's counter, insert the child with seq = counter and inherited fields
# -> false (no parent / where fails), 0 (the child exists), else seq and inherited fields
LUA_APPEND = r"""
local playout, clayout, prk, crk = cjson.decode(arg()), cjson.decode(arg()), arg(), arg()
local conds = read_conds()
local set = read_pairs()
local counter, seq, inherit = arg(), arg(), list(arg())
local child = read_pairs()
if redis.call('EXISTS', prk) == 0 or not check(prk, conds) then return false end
if redis.call('EXISTS', crk) == 1 then return 0 end
local old = members(prk, playout)
local n = incr(redis.call('HGET', prk, counter), 1)
set[#set + 1] = counter
set[#set + 1] = n
redis.call('HSET', prk, unpack(set))
reindex(playout, old, members(prk, playout))
local out = {n}
child[#child + 1] = seq
child[#child + 1] = n
if #inherit > 0 then
  local vals = redis.call('HMGET', prk, unpack(inherit))
  for i, f in ipairs(inherit) do
    child[#child + 1] = f
    child[#child + 1] = vals[i] or NONE
    out[#out + 1] = vals[i] or NONE
  end
end
redis.call('HSET', crk, unpack(child))
reindex(clayout, {}, members(crk, clayout))
return table.concat(out)
"""

# walk a due range; lease each record whose `lease` field is at most `now` (None sorts
# lowest, so unleased ones too): set its fields, bump `rev`; -> the leased rows
LUA_CLAIM = r"""
local layout, zkey, rprefix, kp = cjson.decode(arg()), arg(), arg(), keypos(arg())
local lo, hi, now, lease, rev, limit = arg(), arg(), arg(), arg(), arg(), num()
local set = read_pairs()
local fields = list(arg())
local out, n = {}, 0
while n < limit do
  local ms = redis.call('ZRANGEBYLEX', zkey, lo, hi, 'LIMIT', 0, 64)
  if #ms == 0 then break end
  for _, m in ipairs(ms) do
    local rk = key_of(m, kp, rprefix)
    local cur = redis.call('HGET', rk, lease)
    if cur and cmp(cur, now) <= 0 then
      local old = members(rk, layout)
      local vals = {unpack(set)}
      vals[#vals + 1] = rev
      vals[#vals + 1] = incr(redis.call('HGET', rk, rev), 1)
      redis.call('HSET', rk, unpack(vals))
      reindex(layout, old, members(rk, layout))
      row(rk, fields, out)
      n = n + 1
      if n == limit then break end
    end
  end
  lo = '(' .. ms[#ms]
end
return table.concat(out)
"""

# add the members of the given indexes for rkeys (an index built on existing records)
LUA_REINDEX = r"""
local layout = cjson.decode(arg())
while ai < #ARGV do reindex(layout, {}, members(arg(), layout)) end
return 0
"""

LUA_UNLOCK = r"""
if redis.call('GET', ARGV[1]) == ARGV[2] then return redis.call('DEL', ARGV[1]) end
return 0
"""

SCRIPTS = {
    "get": LUA_LIB + LUA_GET, "find": LUA_LIB + LUA_FIND, "count": LUA_LIB + LUA_COUNT,
    "distinct": LUA_LIB + LUA_DISTINCT, "group": LUA_LIB + LUA_GROUP, "put": LUA_LIB + LUA_PUT,
    "update": LUA_LIB + LUA_UPDATE, "delete": LUA_LIB + LUA_DELETE, "append": LUA_LIB + LUA_APPEND,
    "claim": LUA_LIB + LUA_CLAIM, "reindex": LUA_LIB + LUA_REINDEX, "unlock": LUA_UNLOCK,
}


# -- layout and planning (no I/O) ----------------------------------------------------------


@dataclass
class Ix:
    """One sorted set: members are the encodings of `order` (its fields, then the rest of
    the key) concatenated."""

    name: str
    zkey: bytes
    fields: tuple[str, ...]
    order: tuple[str, ...]
    sparse: bool = False
    multi: str | None = None  # the list field this index expands (one member per value)
    key_pos: tuple[int, ...] = ()  # 1-based component positions of the key fields

    @property
    def kp_arg(self) -> bytes:
        """Where the key is in a member: "=n" when it is the tail after n components."""
        n = len(self.order) - len(self.key_pos)
        if self.key_pos == tuple(range(n + 1, len(self.order) + 1)):
            return b"=%d" % n
        return ",".join(map(str, self.key_pos)).encode()

    def lua(self) -> list:
        return [self.zkey.decode(), int(self.sparse), *(("#" + f) if f == self.multi else f for f in self.order)]


@dataclass
class Plan:
    ix: Ix
    ranges: list[tuple[bytes, bytes]]  # (min, max) in ZRANGEBYLEX syntax
    served: bool  # every condition is answered by the ranges alone
    score: tuple[int, int] = (0, 0)


@dataclass
class Table:
    spec: TableSpec
    prefix: bytes
    rprefix: bytes = b""
    key_index: Ix | None = None
    indexes: list[Ix] = field(default_factory=list)  # key index first, then spec, then multi
    kinds: dict[str, str] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    layout: str = ""  # the indexes as the scripts take them
    columns_arg: bytes = b""

    def __post_init__(self) -> None:
        spec = self.spec
        base = self.prefix + b":" + spec.physical.encode() + b":"
        self.rprefix = base + b"r:"
        self.kinds = {c.name: c.kind for c in spec.columns}
        # the key first: a script tells a missing record by its missing first field
        self.columns = spec.key + tuple(c.name for c in spec.columns if c.name not in spec.key)
        self.columns_arg = ",".join(self.columns).encode()
        self.key_index = self._ix("key", base + b"k", spec.key)
        self.indexes = [self.key_index]
        seen = {spec.key}
        for idx in spec.indexes:
            if idx.fields not in seen:
                seen.add(idx.fields)
                self.indexes.append(self._ix(",".join(idx.fields), base + b"i:" + ",".join(idx.fields).encode(),
                                             idx.fields, sparse=idx.sparse))
        for f in spec.multi:
            self.indexes.append(self._ix(f, base + b"m:" + f.encode(), (f,), multi=f))
            if "user_id" in self.kinds:  # as SQL's side table: a user's values without a join
                self.indexes.append(self._ix(f"user_id,{f}", base + b"m:user_id," + f.encode(), ("user_id", f), multi=f))
        self.layout = json.dumps([ix.lua() for ix in self.indexes], ensure_ascii=False)

    def _ix(self, name: str, zkey: bytes, fields: tuple[str, ...], *, sparse: bool = False, multi: str | None = None) -> Ix:
        order = fields + tuple(k for k in self.spec.key if k not in fields)
        return Ix(name, zkey, fields, order, sparse, multi, tuple(order.index(k) + 1 for k in self.spec.key))

    # -- records ---------------------------------------------------------------------------

    def rkey(self, key: Sequence[Any]) -> bytes:
        return self.rprefix + b"".join(encode(self.kinds[k], v) for k, v in zip(self.spec.key, key))

    def pairs(self, row: dict, names: Iterable[str] | None = None) -> list[bytes | str]:
        """hash field, value, ... for `names` (default: every column) of `row`."""
        out: list[bytes | str] = []
        for name in self.columns if names is None else names:
            out += (name, encode(self.kinds[name], row.get(name)))
            if name in self.spec.multi:
                values = row.get(name) or ()
                out += ("#" + name, b"".join(encode("str", v) for v in dict.fromkeys(values)))
        return out

    def decode_rows(self, fields: Sequence[str], blob: bytes) -> list[dict]:
        """Rows from a script's reply: each row's fields concatenated, each ends with \\x00.
        Decoded a column at a time (one comprehension per column, one parse per JSON column)."""
        if not blob:
            return []
        parts = blob.split(b"\x00")
        width = len(fields)
        end = (len(parts) - 1) // width * width
        cols = [COLUMN_DECODERS[self.kinds[f]](parts[j:end:width]) for j, f in enumerate(fields)]
        return [dict(zip(fields, values)) for values in zip(*cols)]

    def arg(self, fields: Sequence[str]) -> bytes:
        """A list of field names as one script argument."""
        if fields is self.columns:
            return self.columns_arg
        return ",".join(fields).encode()

    def cond_args(self, where: Iterable[Cond], strict: bool = False) -> list:
        """The conditions a script checks itself (on scalar columns), as its arguments;
        with `strict`, any other condition is refused rather than left unchecked."""
        conds = []
        for c in where:
            if c.op in ("eq", "in", *_RANGE_OPS) and self.kinds[c.field] != "json":
                conds.append(c)
            elif strict:
                raise ValueError(f"a conditional write cannot check {c}")
        out: list = [len(conds)]
        for c in conds:
            values = c.value if c.op == "in" else [c.value]
            out += [c.field, c.op, len(values), *(encode(self.kinds[c.field], v) for v in values)]
        return out

    def fetch_fields(self, wanted: Sequence[str] | None, *extra: Iterable[str]) -> tuple[str, ...]:
        """The fields to read: the key first (a missing record shows as a missing key)."""
        if wanted is None:
            return self.columns
        names = list(self.spec.key) + list(self.columns if wanted is None else wanted)
        for more in extra:
            names += list(more)
        return tuple(dict.fromkeys(names))

    # -- planning ---------------------------------------------------------------------------

    def by_key(self, where: Iterable[Cond]) -> list[tuple] | None:
        if len(self.spec.key) != 1:
            return None
        k = self.spec.key[0]
        for c in where:
            if c.field == k and c.op == "eq":
                return [(c.value,)]
            if c.field == k and c.op == "in":
                return [(x,) for x in dict.fromkeys(c.value)]
        return None

    def plan(self, where: Sequence[Cond], order: tuple[str, ...] | None = None, desc: bool = False,
             after: tuple | None = None) -> Plan | None:
        """The index and ranges serving `where` (and `order`, when given): the longest
        equality prefix (`in` values expand into several prefixes), then a range on the next
        field; with `order`, the index must yield it after its prefix."""
        eqs: dict[str, list[bytes]] = {}
        ranges: dict[str, list[Cond]] = {}
        for c in where:
            if c.op in ("eq", "in") and c.field not in eqs and self.kinds.get(c.field) not in (None, "json"):
                values = [c.value] if c.op == "eq" else list(c.value)
                eqs[c.field] = list(dict.fromkeys(encode(self.kinds[c.field], v) for v in values))
            elif c.op in _RANGE_OPS and self.kinds.get(c.field) not in (None, "json"):
                ranges.setdefault(c.field, []).append(c)
        best: Plan | None = None
        for ix in self.indexes:
            if ix.multi:
                continue
            n, width = 0, 1
            while n < len(ix.order) and ix.order[n] in eqs and width * len(eqs[ix.order[n]]) <= MAX_PREFIXES:
                width *= len(eqs[ix.order[n]])
                n += 1
            if order is not None:
                while n > 0 and ix.order[n : n + len(order)] != order:
                    n -= 1
                if ix.order[n : n + len(order)] != order:
                    continue
            first = ix.order[0]
            if ix.sparse and not ((n > 0 and NONE not in eqs[first]) or (n == 0 and first in ranges)):
                continue  # a sparse index lacks the records whose first field is None
            ranged = n < len(ix.order) and ix.order[n] in ranges
            score = (n, int(ranged))
            if order is None and score == (0, 0):
                continue
            if best is not None and score <= best.score:
                continue
            used = set(ix.order[:n])
            served = all(
                (c.op in ("eq", "in") and c.field in used and self._single(where, c.field))
                or (c.op in _RANGE_OPS and ranged and c.field == ix.order[n])
                for c in where
            )
            best = Plan(ix, self._ranges(ix, n, eqs, ranges, order, desc, after), served, score)
        return best

    @staticmethod
    def _single(where: Sequence[Cond], f: str) -> bool:
        return sum(1 for c in where if c.field == f and c.op in ("eq", "in")) == 1

    def _ranges(self, ix: Ix, n: int, eqs: dict, ranges: dict, order, desc: bool, after) -> list[tuple[bytes, bytes]]:
        out = []
        for combo in itertools.product(*(eqs[f] for f in ix.order[:n])):
            p = b"".join(combo)
            lo, hi = (p, False), (p + HIGH, True)  # (bound, exclusive)
            if n < len(ix.order) and ix.order[n] in ranges:
                f = ix.order[n]
                lo = _tighter_lo(lo, (p + NONE + HIGH, True))  # a range never holds None
                for c in ranges[f]:
                    v = encode(self.kinds[f], c.value)
                    if c.op == "gte":
                        lo = _tighter_lo(lo, (p + v, False))
                    elif c.op == "gt":
                        lo = _tighter_lo(lo, (p + v + HIGH, True))
                    elif c.op == "lte":
                        hi = _tighter_hi(hi, (p + v + HIGH, True))
                    else:
                        hi = _tighter_hi(hi, (p + v, True))
            if order is not None and after is not None:
                pos = p + b"".join(encode(self.kinds[f], v) for f, v in zip(order, after))
                if desc:
                    hi = _tighter_hi(hi, (pos, True))
                else:  # past every member that starts with pos
                    lo = _tighter_lo(lo, (pos + HIGH, True))
            out.append(((b"(" if lo[1] else b"[") + lo[0], (b"(" if hi[1] else b"[") + hi[0]))
        return out

    def multi_plan(self, where: Sequence[Cond]) -> tuple[Ix, list[tuple[bytes, bytes]]] | None:
        """For "contains all" on a list field: one range per wanted value (in the user's
        own index when the query names one user)."""
        for c in where:
            if c.op == "contains_all" and c.field in self.spec.multi and c.value:
                user = [x for x in where if x.field == "user_id" and x.op == "eq"]
                name = f"user_id,{c.field}" if user else c.field
                ix = next(i for i in self.indexes if i.multi and i.name == name)
                p = encode("str", user[0].value) if user else b""
                vals = [p + encode("str", v) for v in dict.fromkeys(c.value)]
                return ix, [(b"[" + v, b"(" + v + HIGH) for v in vals]
        return None

    def distinct_plan(self, f: str, where: Sequence[Cond]) -> tuple[Ix, int, list[tuple[bytes, bytes]]] | None:
        """An index that lists `f` right after equality fields covering `where`: its
        distinct values are found by hopping from one value to the next."""
        if any(c.op not in ("eq", "in") for c in where) or len({c.field for c in where}) != len(where):
            return None
        eqs = {c.field: ([c.value] if c.op == "eq" else list(c.value)) for c in where}
        n = len(eqs)
        for ix in self.indexes:
            if set(ix.order[:n]) != set(eqs) or ix.order[n : n + 1] != (f,) or (ix.sparse and n == 0):
                continue
            combos = itertools.product(*([encode(self.kinds[g], v) for v in eqs[g]] for g in ix.order[:n]))
            ranges = [(b"[" + b"".join(c), b"(" + b"".join(c) + HIGH) for c in combos]
            return ix, n + 1, ranges
        return None

    def group_plan(self, by: str, max_field: str, where: Sequence[Cond]) -> tuple[Ix, int, bytes, bytes] | None:
        """An index ordered (equality fields..., by, max_field, ...) serving `where`: each
        group is one counted range whose last member holds the group's maximum."""
        plan = self.plan(where, (by, max_field))
        if plan is None or not plan.served or len(plan.ranges) != 1 or plan.ix.sparse:
            return None
        n = plan.score[0]
        lo, hi = plan.ranges[0]
        return plan.ix, n + 1, lo, hi


def _tighter_lo(a: tuple[bytes, bool], b: tuple[bytes, bool]) -> tuple[bytes, bool]:
    return max(a, b)  # at equal bytes an exclusive bound (True) is the tighter


def _tighter_hi(a: tuple[bytes, bool], b: tuple[bytes, bool]) -> tuple[bytes, bool]:
    return min(a, b, key=lambda x: (x[0], not x[1]))


def finish(rows: list[dict], where: Sequence[Cond], order: tuple[str, ...], desc: bool, after: tuple | None,
           limit: int | None, filtered: bool = False) -> list[dict]:
    """Filter, sort, apply the keyset position and the limit to rows read in no useful order."""
    if not filtered:
        rows = [r for r in rows if matches_all(r, where)]
    if order:
        rows.sort(key=lambda r: row_key(r, order), reverse=desc)
        if after is not None:
            rows = list(after_filter(rows, Query("", order=order, desc=desc, after=after)))
    return rows[:limit] if limit is not None else rows


def parse_url(db_url: str) -> tuple[str, str]:
    """(the URL as given, a printable location without credentials)."""
    if not isinstance(db_url, str) or urlsplit(db_url).scheme not in ("redis", "rediss", "unix"):
        raise InvalidInputError(f"not a Redis URL: {db_url!r} (expected redis://host:port/db, rediss:// or unix://)")
    u = urlsplit(db_url)
    where = f"{u.hostname or ''}:{u.port or 6379}{u.path or '/0'}" if u.scheme != "unix" else u.path
    return db_url, f"{u.scheme}://{where}"


def check_prefix(prefix: Any) -> bytes:
    if not isinstance(prefix, str) or not prefix or any(ch.isspace() or ord(ch) < 32 for ch in prefix):
        raise InvalidInputError(f"prefix must be a non-empty string without spaces or control characters, got {prefix!r}")
    return prefix.encode()


# -- the dbs -----------------------------------------------------------------------------


class RedisDb(Db):
    """Redis (5+; scripts need Lua): sessions, runs and every other table as hashes with
    sorted-set indexes under one key prefix."""

    def __init__(self, db_url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "agentkeep",
                 id: str | None = None, client_options: dict | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, **tables: str) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix="", tables=tables)
        with driver_for("RedisDb", "redis"):
            from agentkeep.db._sync.redis_kernel import RedisKernel

        kernel = RedisKernel(db_url, prefix, options.mapping(client_options, "client_options"),
                             options.seconds(connect_timeout))
        super().__init__(kernel, id=id, table_prefix="", tables=overrides)


class AsyncRedisDb(AsyncDb):
    """RedisDb's async twin on redis.asyncio: every method awaitable. Belongs to the event
    loop it is first used on."""

    def __init__(self, db_url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "agentkeep",
                 id: str | None = None, client_options: dict | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, **tables: str) -> None:
        overrides = options.db_arguments(self, id=id, table_prefix="", tables=tables)
        with driver_for("AsyncRedisDb", "redis"):
            from agentkeep.db._async.redis_kernel import AsyncRedisKernel

        kernel = AsyncRedisKernel(db_url, prefix, options.mapping(client_options, "client_options"),
                                  options.seconds(connect_timeout))
        super().__init__(kernel, id=id, table_prefix="", tables=overrides)
