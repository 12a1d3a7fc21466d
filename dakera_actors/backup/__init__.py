"""Backups: cluster-consistent bundles of every shard, stored, downloaded, uploaded and restored."""
