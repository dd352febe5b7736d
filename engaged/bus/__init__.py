"""The event bus between nodes: NATS JetStream (connection, stream, publisher, consumer, roles)."""
