"""Where events leave engaged: webhook delivery (outbox cursor, batches, signed POSTs) and the live stream."""
