-- the distinct values of component `pos` within each range: one hop per value
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
