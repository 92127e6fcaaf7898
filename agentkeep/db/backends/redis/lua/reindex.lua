-- add the members of the given indexes for rkeys (an index built on existing records)
local layout = cjson.decode(arg())
while ai < #ARGV do reindex(layout, {}, members(arg(), layout)) end
return 0
