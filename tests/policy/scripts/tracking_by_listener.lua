-- Turn engagement tracking on for everything injected on the marketing listener,
-- and off for recipients at a domain that must never see tracked links.
require("msys.core")
require("msys.extended.vctx")

local MARKETING_LISTENER = "127.0.0.1:2526"
local UNTRACKED_DOMAIN = "private.example"

local mod = {}

function mod:validate_data_spool_each_rcpt(msg, accept, vctx)
  if vctx:get(msys.core.VCTX_CONN, "listener") == MARKETING_LISTENER then
    vctx:set(msys.core.VCTX_MESS, "smtpapi_open_tracking", "true")
    vctx:set(msys.core.VCTX_MESS, "smtpapi_click_tracking", "true")
  end
  if string.lower(vctx:get(msys.core.VCTX_MESS, "rcptto_domain")) == UNTRACKED_DOMAIN then
    vctx:set(msys.core.VCTX_MESS, "smtpapi_open_tracking", "false")
    vctx:set(msys.core.VCTX_MESS, "smtpapi_click_tracking", "false")
  end
  return msys.core.VALIDATE_CONT
end

msys.registerModule("tracking_by_listener", mod)
