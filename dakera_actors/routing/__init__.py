"""Request routing: any node answers any memory request, serving what it owns and forwarding the
rest to the owner of the agent's shard (:mod:`.router`), each forwarded write applied once
(:mod:`.idempotency`)."""
