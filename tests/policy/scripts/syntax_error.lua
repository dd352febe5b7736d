require("msys.core")
local mod = {}
function mod:validate_connect(accept, vctx)
  return msys.core.VALIDATE_CONT
msys.registerModule("broken", mod)
