"""The HTTP facade: :func:`.app.create_app` builds the Quart app; import names from their modules
(:mod:`.app`, :mod:`.errors`, :mod:`.responses`). This ``__init__`` imports nothing, so the
Quart-free :mod:`.errors` never pulls Quart in through the package."""
