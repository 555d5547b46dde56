"""Reading YAML that people wrote (topologies, drills, load profiles): one readable error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class YamlSyntaxError(ValueError):
    """Not YAML; the message says where: ``not valid YAML at line 3: mapping values...``."""


def safe_load(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise YamlSyntaxError(f"not valid YAML{where}: {problem}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise YamlSyntaxError("YAML nested too deeply to read") from None


def listing(keys: Iterable[object]) -> str:
    """Mapping keys for a one-line message, sorted: YAML keys may be numbers, dates or null
    too, and strings with a line break (quoted then)."""
    return ", ".join(sorted(k if isinstance(k, str) and k.isprintable() else repr(k)
                            for k in keys))
