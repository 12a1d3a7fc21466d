"""The L1.5 cache: a shared Redis read cache with a freshness rule (:mod:`.generation`, the Lua
twins in :mod:`.scripts`), the Trio-facing Redis client (:mod:`.client`: bounded calls, one
error, a health flag), the primary's generation loop (:mod:`.primary`) and what the node's router
and store use (:mod:`.facade`)."""
