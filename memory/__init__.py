"""Filesystem-scoped memory: confined to its scope, audited, searchable."""
