-- Take campaign, tags and metadata from private headers, then remove those headers
-- so they never leave the MTA (the idiom of Momentum's sample policies).
require("msys.core")
require("msys.extended.message")

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

local mod = {}

function mod:validate_data_spool(msg, accept, vctx)
  local campaign = msg:header("X-Campaign")[1]
  if campaign then
    msg:context_set(msys.core.ECMESS_CTX_MESS, "smtpapi_campaign_id", campaign)
    msg:header("X-Campaign", "")
  end
  local tags = msg:header("X-Tags")[1]
  if tags then
    local list = {}
    for tag in tags:gmatch("[^,%s]+") do list[#list + 1] = json_string(tag) end
    msg:context_set(msys.core.ECMESS_CTX_MESS, "smtpapi_tags", "[" .. table.concat(list, ",") .. "]")
    msg:header("X-Tags", "")
  end
  local user = msg:header("X-User-Id")[1]
  if user then
    vctx:set(msys.core.VCTX_MESS, "smtpapi_metadata", '{"user_id":' .. json_string(user) .. '}')
    msg:header("X-User-Id", "")
  end
  return msys.core.VALIDATE_CONT
end

msys.registerModule("campaign_from_headers", mod)
