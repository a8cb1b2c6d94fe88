"""``whalebone serve``: any engine behind a DeepSeek-compatible HTTP API.

- ``server`` — :func:`create_app` / :class:`Server`: the endpoints, admission, streaming;
- ``chat_request`` / ``chat_response`` — OpenAI/DeepSeek request and response shapes, checked
  and rendered with the V4 codec;
- ``http`` — auth, errors, SSE, the bounded queue, capped JSON bodies (shared with the daemon's
  API); ``guard`` — Host/Origin/content-type checks against browsers; ``accesslog`` — one line
  per request; ``openapi`` — the document at ``/openapi.json``;
- ``cli`` — the ``serve`` command.

Nothing is re-exported (starlette loads with ``server``): use ``whalebone.engine.create_app``.
"""
