"""The dashboard: server-rendered pages over the event store, served on the API listener."""
