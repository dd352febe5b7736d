-- Refuse blocked recipients for good, and ask one sender domain to come back later.
require("msys.core")
require("msys.extended.vctx")

local mod = {}

function mod:validate_mailfrom(str, accept, vctx)
  if vctx:get(msys.core.VCTX_MESS, "mailfrom_domain") == "later.example" then
    vctx:set_code(451, "come back later")
    return msys.core.VALIDATE_DONE
  end
  return msys.core.VALIDATE_CONT
end

function mod:validate_rcptto(msg, str, accept, vctx)
  if vctx:get(msys.core.VCTX_MESS, "rcptto_domain") == "blocked.example" then
    vctx:set_code(550, "5.7.1 recipient " .. str .. " is blocked by policy")
    return msys.core.VALIDATE_DONE
  end
  return msys.core.VALIDATE_CONT
end

msys.registerModule("reject", mod)
