"""The backends, one package per family; each imports only its own driver, when used.

The public import paths (`agentkeep.db.sqlite`, `agentkeep.db.redis`, ...) and the lazy names of
`agentkeep.db` lead here."""
