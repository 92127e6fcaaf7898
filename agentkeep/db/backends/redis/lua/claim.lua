-- walk a due range; lease each record whose `lease` field is at most `now` (None sorts
-- lowest, so unleased ones too): set its fields, bump `rev`; -> the leased rows
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
