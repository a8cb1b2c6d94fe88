"""The spend guard: hard limits before every model call, extensions decided by an auditor."""
