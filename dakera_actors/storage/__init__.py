"""Object storage for the planned cold tier: one interface (:mod:`.objects`), three implementations.

Only ``s3`` is opened by the node today (probed at start); nothing writes through any of them yet.
``filesystem`` lays objects out under a directory (meant as the embedded default), ``memory`` keeps them in
a dict with injectable faults (for simulations), ``s3`` talks to S3-compatible storage through
aiobotocore, run under Trio by trio-asyncio in that one module.
"""
