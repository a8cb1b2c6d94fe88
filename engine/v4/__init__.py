"""The V4 model in PyTorch, readable module by module, in the order of V4's paper.

- ``config`` — :class:`ModelConfig`: V4's inference-config keys and presets (flash, pro, nano,
  micro);
- ``layers`` — RMSNorm, RoPE with YaRN;
- ``attention`` — the sliding window, the ratio-4 and ratio-128 compressors, the lightning
  indexer's top-k, the per-head sink, the grouped low-rank output;
- ``moe`` — sqrt-softplus routing, hash-routed first layers, clamped SwiGLU experts;
- ``hyper`` — hyper-connections (Sinkhorn mixing and the head mix);
- ``model`` — :class:`Transformer`: prefill, chunks and one-token decode over a state;
- ``state`` — :class:`SeqState`, what a sequence carries between forward passes;
- ``weights`` and ``quant`` — V4's checkpoint layout (FP8/FP4 dequantized on load) and ours;
- ``fidelity`` — logits on V4's reference schedule, to hold against its own inference code.

Importing this package imports nothing (torch loads with the first module): the modules are
named, not re-exported, so that ``import whalebone.engine`` never pulls torch.
"""
