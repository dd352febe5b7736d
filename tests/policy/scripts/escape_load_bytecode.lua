-- A precompiled chunk (header of Lua 5.4 bytecode) must not load, whatever mode is asked for.
local chunk, problem = load("\27Lua\84\0\25\147\13\10\26\10", "bytecode", "b")
assert(chunk, problem)
