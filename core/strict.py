"""Models for settings a person writes: an unknown key is refused, naming the key it likely was.

A misspelt key silently ignored is a setting silently missing (``sesion_usd = 1.0`` would drop a
budget limit), so every table of a settings file is a :class:`StrictModel`.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown keys with ``did you mean …?``. ``what`` names the
    table in the message (``unknown keys ['max_step'] in [agent] ('max_step': did you mean
    'max_steps'?)``)."""

    model_config = ConfigDict(extra="forbid")
    what: ClassVar[str] = "the settings"

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        # extra="forbid" alone would refuse them too; this names the key a typo meant.
        if isinstance(data, dict):
            known = [*cls.model_fields, *(f.alias for f in cls.model_fields.values() if f.alias)]
            unknown = sorted(str(k) for k in data if k not in known)
            if unknown:
                hints = [f"{k!r}: did you mean {m[0]!r}?" for k in unknown
                         if (m := difflib.get_close_matches(k, known, n=1))]
                hint = f" ({'; '.join(hints)})" if hints else ""
                raise ValueError(f"unknown keys {unknown} in {cls.what}{hint}")
        return data
