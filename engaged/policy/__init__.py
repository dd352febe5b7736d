"""Lua policy (Momentum's scriptlets): import the engine from engaged.policy.engine."""
