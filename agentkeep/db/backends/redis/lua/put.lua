-- mode i (insert), k (keep existing), r (replace); rows: rkey, pairs -> rows written
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
