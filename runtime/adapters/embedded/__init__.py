"""Embedded backends: a real single-node deployment with no servers to run.

SQLite (WAL) is the message store and the event log, the session directory
and presence live in memory, blobs in a local directory, push goes to a log.
"""
