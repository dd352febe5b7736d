"""Delivery: build each recipient's copy, hand it to a transport, record the outcome."""
