-- bump the parent's counter, insert the child with seq = counter and inherited fields
-- -> false (no parent / where fails), 0 (the child exists), else seq and inherited fields
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
