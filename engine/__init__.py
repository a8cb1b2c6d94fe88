"""Engines: the bundled V4 engine (PyTorch) and clients for engines elsewhere."""
