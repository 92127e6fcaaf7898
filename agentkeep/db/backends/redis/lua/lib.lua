-- Shared by every script. Arguments are read in order from ARGV (`arg`, `num`); a layout
-- is a JSON list of indexes, each [sorted set, sparse (0/1), hash field, ...] with the
-- fields in index order; a `#field` is a list field (one member per value).
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
