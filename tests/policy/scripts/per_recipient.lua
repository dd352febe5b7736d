-- A different campaign for each recipient, named after the recipient's domain.
require("msys.core")
require("msys.extended.message")

local mod = {}

function mod:validate_data_spool(msg, accept, vctx)
  vctx:set(msys.core.VCTX_MESS, "smtpapi_campaign_id", "default")
  return msys.core.VALIDATE_CONT
end

function mod:validate_data_spool_each_rcpt(msg, accept, vctx)
  local domain = vctx:get(msys.core.VCTX_MESS, "rcptto_domain")
  if domain ~= "default.example" then
    vctx:set(msys.core.VCTX_MESS, "smtpapi_campaign_id", "campaign-" .. domain)
    vctx:set(msys.core.VCTX_MESS, "x_rcptto", msg:rcptto())
  end
  return msys.core.VALIDATE_CONT
end

msys.registerModule("per_recipient", mod)
