"""The persistent agent loop, its sessions and the ``whalebone`` command line."""
