"""Options of the package's configurable classes: defaults updated by the caller's, where a
key the defaults lack is an error (a typo must not pass silently). The one merge of the package:
the network, the losses, the labels, the data sets and image reading all use it."""

from typing import Any, Dict, Mapping, Optional


class UnknownOptionError(KeyError, ValueError):
    """An option the defaults lack. A ValueError for a bad argument, and a KeyError for callers
    that treat confs as mappings."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError would quote the message


def _plain(conf: Any) -> Dict[str, Any]:
    """A dict of ``conf``: a mapping, ``None``, or an OmegaConf node (resolved)."""
    if conf is None:
        return {}
    if not isinstance(conf, dict):
        try:
            from omegaconf import OmegaConf

            if OmegaConf.is_config(conf):
                return OmegaConf.to_container(conf, resolve=True)
        except ImportError:  # training's configs are OmegaConf; inference needs none
            pass
    return dict(conf)


def with_defaults(
    default: Mapping[str, Any], conf: Optional[Mapping[str, Any]], what: str
) -> Dict[str, Any]:
    """``default`` updated by ``conf``, recursively where a default is a non-empty dict (an
    empty one takes any sub-options: its consumer checks them).

    Raises:
        UnknownOptionError: naming ``what`` (``what.key`` for nested options), the unknown keys
            and the valid ones.
    """
    conf = _plain(conf)
    unknown = set(conf) - set(default)
    if unknown:
        raise UnknownOptionError(
            f"Unknown {what} options {sorted(unknown)}; valid: {sorted(default)}."
        )
    out = dict(default)
    for key, value in conf.items():
        nested = default[key]
        if isinstance(nested, dict) and nested and isinstance(value, Mapping):
            out[key] = with_defaults(nested, value, f"{what}.{key}")
        else:
            out[key] = value
    return out
