-- rkeys... -> the rows that exist, their fields concatenated
local fields, out = list(arg()), {}
while ai < #ARGV do row(arg(), fields, out) end
return table.concat(out)
