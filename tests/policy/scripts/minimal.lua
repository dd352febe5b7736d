require("msys.core")
require("msys.extended.message")

local mod = {}

function mod:validate_data_spool_each_rcpt(msg, accept, vctx)
  -- enable both kinds of tracking and tag the campaign for this message
  vctx:set(msys.core.VCTX_MESS, "smtpapi_open_tracking", "true")
  vctx:set(msys.core.VCTX_MESS, "smtpapi_click_tracking", "1")
  vctx:set(msys.core.VCTX_MESS, "smtpapi_campaign_id", "spring_sale")
  vctx:set(msys.core.VCTX_MESS, "smtpapi_tracking_domain", "click.example.com")
  vctx:set(msys.core.VCTX_MESS, "smtpapi_tags", '["promo","eu"]')
  return msys.core.VALIDATE_CONT
end

msys.registerModule("smtpapi_policy", mod)
