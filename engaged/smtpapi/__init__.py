"""X-MSYS-API: the per-message JSON header, and the precedence that merges it with config and policy."""
