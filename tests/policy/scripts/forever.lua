-- A callout that never returns; the instruction budget must stop it.
require("msys.core")

local mod = {}

function mod:validate_connect(accept, vctx)
  vctx:set(msys.core.VCTX_CONN, "greeted", "yes")
  return msys.core.VALIDATE_CONT
end

function mod:validate_data_spool_each_rcpt(msg, accept, vctx)
  while true do end
end

msys.registerModule("forever", mod)
