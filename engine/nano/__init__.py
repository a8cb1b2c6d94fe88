"""whalebone-nano: the small V4-architecture model shipped as the bundled engine's default.

- :mod:`.tasks`: the task families and their seeded specs (train: seeds >= 1, held-out: seed 0);
- :mod:`.audit`: the budget-auditor family and the policy it is taught;
- :mod:`.data`: conversations rendered through the real agent loop, tools and codec;
- :mod:`.train`: ``python -m whalebone.engine.nano.train --out DIR --minutes N``;
- :mod:`.card`: the model card, filled from the training log and ``bench/nano_eval.py``.

The checkpoint itself lives in ``whalebone/engine/checkpoints/whalebone-nano``.
"""
