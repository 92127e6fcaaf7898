-- rkeys whose records still meet `where` are deleted -> how many
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
