"""The durable spool: accepted messages on disk until every recipient is finished."""
