"""Options of the package's configurable classes: defaults updated by the caller's, where a
key the defaults lack is an error (a typo must not pass silently)."""

from typing import Any, Dict, Mapping, Optional, Type


def with_defaults(
    default: Mapping[str, Any],
    conf: Optional[Mapping[str, Any]],
    what: str,
    error: Type[Exception] = ValueError,
) -> Dict[str, Any]:
    """``{**default, **conf}``; raises ``error`` naming ``what`` and the valid keys on a key
    ``default`` lacks."""
    conf = dict(conf or {})
    unknown = set(conf) - set(default)
    if unknown:
        raise error(f"Unknown {what} options {sorted(unknown)}; valid: {sorted(default)}.")
    return {**default, **conf}
