"""The L1.5 cache: a shared Redis read cache with a freshness rule (:mod:`.generation`)."""
