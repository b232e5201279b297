"""Netmap building and the long-poll fan-out of changes to the nodes they affect."""
