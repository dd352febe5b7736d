-- Keeps a megabyte more on every turn until the memory cap stops it.
require("msys.core")

local mod = {}

function mod:validate_data(msg, accept, vctx)
  local chunks = {}
  while true do
    chunks[#chunks + 1] = string.rep("x", 1024 * 1024) .. tostring(#chunks)
  end
end

function mod:validate_connect(accept, vctx)
  return msys.core.VALIDATE_CONT
end

msys.registerModule("memory_bomb", mod)
