-- Loads fine; the callout fails when it reaches for io.
require("msys.core")
local mod = {}
function mod:validate_connect(accept, vctx)
  local f = io.open("/etc/passwd")
  vctx:set(msys.core.VCTX_CONN, "stolen", f:read("a"))
  return msys.core.VALIDATE_CONT
end
msys.registerModule("escape_io_open", mod)
