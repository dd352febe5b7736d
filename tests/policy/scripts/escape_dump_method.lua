-- string.dump is gone from the library the string methods use, too.
local f = ("x").dump
assert(f == nil, "string.dump reachable through a string method")
require("msys.core")
local mod = {}
function mod:validate_connect(accept, vctx)
  return msys.core.VALIDATE_CONT
end
msys.registerModule("escape_dump_method", mod)
