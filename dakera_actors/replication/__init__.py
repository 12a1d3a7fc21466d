"""Replication: positions, tails and fetch decisions (core.py) and the replicator actor."""
