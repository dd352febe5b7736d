"""Events: SparkPost-format event records, their ids, and the event stores."""
