"""Training whalebone-nano, the small V4-architecture model the bundled engine ships by default.

A room on top of the stack: it renders its data through the real agent loop, tools, memory and
budget auditor, so it may import every other room and nothing imports it (tests and benches
aside).

- :mod:`.tasks`: the task families and their seeded specs (train: seeds >= 1, held-out: seed 0);
- :mod:`.audit`: the budget-auditor family and the policy it is taught;
- :mod:`.budget_cases`: the auditor's labelled cases (generator + the 48 shipped in ``assets/``);
- :mod:`.data`: conversations rendered through the real agent loop, tools and codec;
- :mod:`.train`: ``python -m whalebone.training.train --out DIR --minutes N``;
- :mod:`.probe`: how fast the nano shape learns to copy;
- :mod:`.card`: the model card, filled from the training log and ``bench/nano_eval.py``.

The checkpoint itself lives in ``whalebone/engine/checkpoints/whalebone-nano``.
"""
