from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from whalebone.core.errors import WhaleboneError
from whalebone.dsml import encode_messages
from whalebone.tools import ShellPolicy, ToolRegistry, builtin_tools


def call(registry: ToolRegistry, name: str, **args: Any) -> Any:
    return anyio.run(registry.call, name, args)


def test_the_default_set_comes_in_a_fixed_order(tmp_path: Path) -> None:
    names = [t.name for t in builtin_tools(tmp_path)]
    assert names == ["read_file", "write_file", "edit_file", "list_dir", "grep", "shell",
                     "http_get", "calculator"]
    assert [t.name for t in builtin_tools(tmp_path, shell=False, web=False, calculator=True)
            ] == ["read_file", "write_file", "edit_file", "list_dir", "grep", "calculator"]


def test_the_tools_block_renders_byte_identically_every_time(tmp_path: Path) -> None:
    def render() -> str:
        tools = builtin_tools(tmp_path, calculator=True).schemas()
        return encode_messages([{"role": "system", "content": "s", "tools": tools}], "thinking")

    assert render() == render()
    # Canonical JSON the model will see: no pydantic titles, descriptions present.
    schemas = json.dumps(builtin_tools(tmp_path).schemas())
    assert '"title"' not in schemas and "Read a text file of the workspace" in schemas


def test_shell_runs_in_the_workspace_and_file_tools_see_its_work(tmp_path: Path) -> None:
    tools = builtin_tools(tmp_path, shell_policy=ShellPolicy(allow=["echo *", "pwd"]))
    assert call(tools, "shell", command="pwd").content == f"exit code 0\n{tmp_path.resolve()}\n"
    wrote = call(tools, "write_file", path="hello.txt", content="hi\n")
    assert not wrote.is_error
    denied = call(tools, "shell", command="cat hello.txt")  # default policy: ask, no approver
    assert denied.is_error and "not approved" in denied.content
    assert call(tools, "read_file", path="hello.txt").content == "     1\thi"


def test_a_read_only_workspace_and_a_missing_one(tmp_path: Path) -> None:
    tools = builtin_tools(tmp_path, read_only=True, shell=False, web=False)
    refused = call(tools, "write_file", path="x.txt", content="x")
    assert refused.is_error and "read-only" in refused.content
    with pytest.raises(WhaleboneError, match="is not a directory"):
        builtin_tools(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(WhaleboneError, match="is not a directory"):
        builtin_tools(tmp_path / "file")


HOSTILE_URLS = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://127.1:{port}/",
    "http://0x7f000001:{port}/",
    "http://017700000001:{port}/",
    "http://2130706433:{port}/",
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://example.com@127.0.0.1:{port}/",
    "http://0.0.0.0:{port}/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/_GET",
    "ftp://127.0.0.1:{port}/",
    "http:///etc/passwd",
]


def test_hostile_urls_through_the_assembled_http_get_reach_nothing(tmp_path: Path) -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"internal secret")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        tools = builtin_tools(tmp_path, shell=False)
        port = httpd.server_address[1]
        for url in HOSTILE_URLS:
            result = call(tools, "http_get", url=url.format(port=port))
            assert result.is_error, (url, result.content)
            assert "internal secret" not in result.content
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert hits == []  # refused before connecting, every one
