-- groups on component `pos`: {value, count, component pos + 1 of the group's last member}
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
