"""The Textual terminal app behind ``whalebone chat``.

``app.ChatApp`` composes the widgets (``sessions``, ``transcript``, ``prompt``, ``status``,
``modals``, the ``commands`` palette); ``runner.ChatRunner`` is the non-visual half (the agent,
engines, tools, approvals, budget requests); ``cli`` registers the command. Textual is imported
only by the widget modules, so ``import whalebone.tui`` and ``whalebone --help`` stay light.
"""
