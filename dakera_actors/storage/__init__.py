"""Object storage for the cold tier: one interface (:mod:`.objects`), three implementations.

``filesystem`` lays objects out under a directory (the embedded default), ``memory`` keeps them in
a dict with injectable faults (for simulations), ``s3`` talks to S3-compatible storage through
aiobotocore, run under Trio by trio-asyncio in that one module.
"""
