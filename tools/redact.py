"""Credentials out of text before it is stored, logged or shown to a model.

:func:`redact` replaces what looks like a credential with a marker a person can see
(``[redacted: api key]``): API keys of the common shapes (``sk-…``, ``ghp_…``, ``github_pat_…``,
``AKIA…``, ``xox…-``, ``AIza…``, ``glpat-…``, ``hf_…``, JWTs), bearer/basic authorization values,
private key blocks, passwords in URLs, ``KEY=value`` / ``"key": "value"`` pairs whose name looks
secret, and the literal values of the secret environment variables this process holds
(``DEEPSEEK_API_KEY``, ``*_TOKEN``, …) or that a host registered with :func:`add_secret`.

It is a filter, not a proof: a credential of no known shape under an innocent name gets through.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

MIN_SECRET_LEN = 8  # shorter values are too likely to be ordinary words

_SECRET_NAME = re.compile(
    r"(^|_)(KEY|KEYS|TOKEN|TOKENS|SECRET|SECRETS|PASSWORD|PASSWD|PASS|PWD|CREDENTIALS?|AUTH)$|"
    r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|"
    r"^(AWS|GOOGLE|GCLOUD|GCP|AZURE|ARM_CLIENT|DEEPSEEK|OPENAI|ANTHROPIC|WHALEBONE|HF|"
    r"HUGGING_?FACE|GITHUB|GH|GITLAB|NPM|PYPI|TWINE|DOCKER|SLACK|STRIPE)_|"
    r"^(SSH_AUTH_SOCK|KUBECONFIG|DATABASE_URL|NETRC)$", re.I)
_HARMLESS_NAMES = {"PWD", "OLDPWD", "WHALEBONE_HOME", "WHALEBONE_ENGINE"}


def is_secret_name(name: str) -> bool:
    """Whether an environment variable of this name should be treated as a credential."""
    return name.upper() not in _HARMLESS_NAMES and bool(_SECRET_NAME.search(name))


_NAME = (r"(?:[A-Za-z0-9_.-]*[_.-])?(?:password|passwd|pass|pwd|secret|token|api[_-]?key|apikey|"
         r"access[_-]?key|private[_-]?key|secret[_-]?key|client[_-]?secret|credentials?)")
_VALUE = (r"(?P<val>\"[^\"\n]*\"|'[^'\n]*'|(?!\[redacted)[^\s\"',;}{()\[\]]{6,}"
          r"(?=[\s,;}]|$))")
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private key", re.compile(
        r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----.*?(?:-----END \1-----|\Z)",
        re.S)),
    ("api key", re.compile(r"\b(?:sk|pk|rk)-(?:ant-|proj-|live-|test-)?[A-Za-z0-9_-]{16,}")),
    ("api key", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}|\bgithub_pat_\w{20,}")),
    ("api key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    ("api key", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("api key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("api key", re.compile(r"\b(?:glpat|gldt|glrt)-[A-Za-z0-9_-]{20,}")),
    ("api key", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("api key", re.compile(r"\b(?:npm|pypi)[-_][A-Za-z0-9_-]{30,}")),
    ("token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("bearer token", re.compile(r"(?i)(?P<pre>\b(?:bearer|basic)\s+)"
                                r"(?P<val>(?!\[redacted)[A-Za-z0-9._~+/=-]{12,})")),
    ("password", re.compile(r"(?P<pre>://[^/\s:@]+:)(?P<val>[^/\s@]+)(?=@)")),
    ("secret value", re.compile(
        r"(?im)(?P<pre>(?<![A-Za-z0-9_])(?:export\s+)?" + _NAME + r"\s*[=:]\s*)" + _VALUE)),
    ("secret value", re.compile(
        r"(?i)(?P<pre>\"" + _NAME + r"\"\s*:\s*)(?P<val>\"(?!\[redacted)(?:[^\"\\\n]|\\.)*\")")),
]

_extra: set[str] = set()


def add_secret(value: str) -> None:
    """Treat ``value`` as a credential from now on (a key a host holds outside the env)."""
    if len(value) >= MIN_SECRET_LEN:
        _extra.add(value)


def held_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The literal secret values this process holds, longest first."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LEN
              and not v.startswith("/")} | _extra
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every credential it recognises replaced by a visible marker."""
    if not text:
        return text
    for value in held_secrets():
        if value in text:
            text = text.replace(value, "[redacted: secret value]")
    for label, pattern in _PATTERNS:
        marker = f"[redacted: {label}]"
        if "val" in pattern.groupindex:
            text = pattern.sub(lambda m, mk=marker: m.group("pre") + _keep_quotes(m.group("val"),
                                                                                mk), text)
        else:
            text = pattern.sub(marker, text)
    return text


def _keep_quotes(value: str, marker: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[0] + marker + value[0]
    return marker


def redact_data(data: Any) -> Any:
    """Every string inside ``data`` (dicts, lists) redacted; keys are kept."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {k: redact_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(v) for v in data]
    return data
