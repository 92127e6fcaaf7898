-- per range (min, max, count): {members read, last member, rows}
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
