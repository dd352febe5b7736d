"""Helpers for tests of engaged and of applications that use it: a real server process, wait_until."""
