"""The bundled engine's runtime: the V4 model (``engine.v4``) behind the engine interface.

- ``bundled`` — :class:`BundledEngine`: prompt ids, prefill and decode in a worker thread,
  cancellation between passes, the shipped checkpoint (``engine/checkpoints``);
- ``prefix_cache`` and ``cache_files`` — snapshots of a sequence's state on disk, checksummed,
  under a size budget shared by processes; ``snapshot_plan`` — where a request snapshots so the
  next turn of a conversation continues from it;
- ``sampling`` — temperature, top-p, seeds; ``vocab`` — a small model's ids mapped to V4's;
  ``progress`` — the progress line on stderr.

Nothing is re-exported (each module loads torch): use ``whalebone.engine.BundledEngine`` or
``open_engine("bundled")``.
"""
