"""The built-in tool set an agent gets when its host gives none.

The tools room assembles it (:func:`whalebone.tools.builtins.builtin_tools`: files confined to
the workspace, shell under a policy, SSRF-guarded http_get, in one fixed order so the cached
tool list never changes); this is its name on the agent's side.
"""

from __future__ import annotations

import os
from typing import Any

from whalebone.tools.registry import ToolRegistry


def default_tools(workspace: str | os.PathLike[str], **options: Any) -> ToolRegistry:
    """``read_file, write_file, edit_file, list_dir, grep, shell, http_get`` for ``workspace``.

    Options as :func:`~whalebone.tools.builtins.builtin_tools` takes them: ``shell_policy``,
    ``approve`` (answers the policy's "ask"), ``http_policy``, ``shell``, ``web``,
    ``calculator``, ``read_only``.
    """
    from whalebone.tools.builtins import builtin_tools

    return builtin_tools(workspace, **options)
