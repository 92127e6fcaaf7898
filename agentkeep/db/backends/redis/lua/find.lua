-- per range (min, max, skip, count): {members read, last member, rows}; the first `skip`
-- members are passed over
local zkey, rprefix, kp, fields = arg(), arg(), keypos(arg()), list(arg())
local rev = arg() == '1'
local res = {}
for r = 1, num() do
  local lo, hi, skip, count = arg(), arg(), num(), num()
  local ms
  if rev then ms = redis.call('ZREVRANGEBYLEX', zkey, hi, lo, 'LIMIT', skip, count)
  else ms = redis.call('ZRANGEBYLEX', zkey, lo, hi, 'LIMIT', skip, count) end
  local out = {}
  for _, m in ipairs(ms) do row(key_of(m, kp, rprefix), fields, out) end
  res[#res + 1] = #ms
  res[#res + 1] = ms[#ms] or ''
  res[#res + 1] = table.concat(out)
end
return res
