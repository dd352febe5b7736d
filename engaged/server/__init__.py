"""The process model of `engaged serve`: a supervisor, workers on SO_REUSEPORT listeners, one node process.

`supervisor.py` binds nothing that serves: it reserves the listening ports (`sockets.py`), prepares
the spool shards and tracker journals (`shards.py`), forks the node process and the workers
(`processes.py`), restarts a child that dies (with backoff) and drains them all on SIGTERM/SIGINT.
"""
