"""Operator actions on the cluster: maintenance (drain a node, bring it back) and manual rebalance
(:mod:`.service`); the maintenance flag as it is kept across restarts (:mod:`.maintenance`)."""
