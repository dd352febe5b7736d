"""engaged: SMTP injection with SparkPost-style engagement tracking."""

__version__ = "0.1.0"
