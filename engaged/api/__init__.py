"""The private HTTP API: events, metrics and webhooks (SparkPost shapes), the live stream, Prometheus."""
