-- per range (min, max): its count
local zkey, res = arg(), {}
for r = 1, num() do res[r] = redis.call('ZLEXCOUNT', zkey, arg(), arg()) end
return res
