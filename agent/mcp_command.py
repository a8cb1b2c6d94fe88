"""``whalebone mcp``: which MCP servers a session in a workspace gets, and trusting a project's.

    whalebone mcp list [--workspace DIR] [--mcp FILE] [--tools]   servers, where each is from
    whalebone mcp trust [--workspace DIR]      start the project's .mcp.json servers from now on
    whalebone mcp untrust [--workspace DIR]

``--tools`` starts the servers (as a session would) and lists their tools; a server that does
not start is one line saying why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from whalebone.core.errors import WhaleboneError


def _setup(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from whalebone.agent.settings import load_settings
    from whalebone.core.home import home
    from whalebone.tools.mcp_config import discover

    settings = load_settings(args.config)
    workspace = Path(args.workspace or settings.workspace).expanduser().resolve()
    return discover(home(), workspace, args.mcp or (), settings.mcpServers), workspace


def cmd_list(args: argparse.Namespace) -> int:
    import anyio

    from whalebone.memory.cli import printable
    from whalebone.tools.mcp_servers import open_servers

    setup, _ = _setup(args)
    for note in setup.notes:
        print(f"whalebone mcp: {printable(note)}", file=sys.stderr)
    if not setup.servers:
        print("no MCP servers configured")
        return 0
    for name, cfg in setup.servers.items():
        what = cfg.url or " ".join([cfg.command or "", *cfg.args])
        off = " (disabled)" if cfg.disabled else ""
        print(printable(f"{name}{off}  {what}  from {setup.origins[name]}"))
    if not args.tools:
        return 0

    async def show() -> int:
        async with open_servers(setup.servers) as mcp:
            for name, why in sorted(mcp.failures.items()):
                print(printable(f"{name}: did not start: {why}"))
            for tool in mcp.tools():
                print(printable(f"  {tool.name}"))
            return 1 if mcp.failures else 0

    return anyio.run(show)


def cmd_trust(args: argparse.Namespace) -> int:
    from whalebone.agent.settings import load_settings
    from whalebone.core.home import home
    from whalebone.tools.mcp_config import trust, untrust

    workspace = Path(args.workspace or load_settings(args.config).workspace).expanduser().resolve()
    if args.command_name == "untrust":
        gone = untrust(home(), workspace)
        print(f"{workspace}: {'no longer trusted' if gone else 'was not trusted'}")
        return 0
    names = trust(home(), workspace)
    print(f"trusted {workspace / '.mcp.json'} as it is now: {', '.join(names) or 'no servers'} "
          "(an edit must be trusted again)")
    return 0


def _guard(fn):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except WhaleboneError as e:
            print(f"whalebone mcp: {e}", file=sys.stderr)
            return 2
    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mcp = sub.add_parser("mcp", help="the MCP servers a session gets; trust a project's",
                         description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    msub = mcp.add_subparsers(dest="mcp_command", metavar="SUBCOMMAND")
    mcp.set_defaults(handler=lambda _args: (mcp.print_help(), 2)[1])

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="settings TOML (default: "
                       "$WHALEBONE_HOME/config.toml)")
        p.add_argument("--workspace", metavar="DIR", help="the project (default: the "
                       "settings' workspace, else the current directory)")

    lst = msub.add_parser("list", help="the servers and where each comes from")
    common(lst)
    lst.add_argument("--mcp", action="append", metavar="FILE",
                     help="an mcpServers file (JSON or TOML), as run and chat take it")
    lst.add_argument("--tools", action="store_true", help="start them and list their tools")
    lst.set_defaults(handler=_guard(cmd_list))
    for name, text in (("trust", "start the workspace's .mcp.json servers (as it is now)"),
                       ("untrust", "stop trusting the workspace's .mcp.json")):
        p = msub.add_parser(name, help=text)
        common(p)
        p.set_defaults(handler=_guard(cmd_trust), command_name=name)
