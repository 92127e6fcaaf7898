-- -> false when no record or `where` fails, else the returning fields after the update
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
