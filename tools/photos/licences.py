"""Which licence statements allow releasing weights trained on a photo: :func:`classify_licence`
turns a free-text statement (a DEP-5 ``License`` field, a README credit, a docstring sentence)
into a :class:`LicenceVerdict` (public domain, CC0, CC BY, BSD, MIT and Apache pass; share-alike,
non-commercial, no-derivatives, copyleft, "all rights reserved" and anything unclear do not)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional


@dataclass(frozen=True)
class LicenceVerdict:
    ok: bool
    name: (
        str  # canonical family ("CC0-1.0", "public-domain", "CC-BY-4.0", "BSD-2-Clause", ...) or ""
    )
    reason: str  # why not, when not ok


_CC_URL = re.compile(
    r"https?://(?:www\.)?creativecommons\.org/licenses/([a-z-]+)/(\d(?:\.\d)?)[^\s)>\]]*"
)
_CC0_URL = re.compile(r"https?://(?:www\.)?creativecommons\.org/publicdomain/zero/[\d.]+[^\s)>\]]*")
_PDM_URL = re.compile(r"https?://(?:www\.)?creativecommons\.org/publicdomain/mark/[\d.]+[^\s)>\]]*")
_ANY_URL = re.compile(r"(?:https?://|www\.)\S+")

_REJECT = [
    (re.compile(r"\bsa\b|share ?alike"), "share-alike"),
    (re.compile(r"\bnc\b|non ?commercial"), "non-commercial"),
    (re.compile(r"\bnd\b|no ?deriv"), "no-derivatives"),
    (
        re.compile(
            r"\b(?:a|l)?gpl|\bg?fdl\b|gnu (?:free documentation|general public|lesser general)"
        ),
        "copyleft (GPL/FDL)",
    ),
    (re.compile(r"all rights reserved|proprietary|\bfair use\b"), "all rights reserved"),
    (re.compile(r"\bnot (?:in the )?public domain"), "not public domain"),
]


def _accepted(part: str) -> List[str]:
    names = []
    if re.search(r"\bcc ?0\b|\bcc ?zero\b|creative commons zero|public domain dedication", part):
        names.append("CC0-1.0")
    elif re.search(r"public ?domain|\bpd\b", part):
        names.append("public-domain")
    m = re.search(
        r"\bcc by\b(?: (\d(?:\.\d)?))?|creative commons attribution\b(?: (\d(?:\.\d)?))?", part
    )
    if m:
        version = m.group(1) or m.group(2)
        names.append(f"CC-BY-{version}" if version else "CC-BY")
    m = re.search(r"\bbsd\b(?: (\d) clause)?", part)
    if m:
        names.append(f"BSD-{m.group(1)}-Clause" if m.group(1) else "BSD")
    if re.search(r"\bmit\b|\bexpat\b", part):
        names.append("MIT")
    if re.search(r"\bapache\b", part):
        names.append("Apache-2.0")
    return names


def _normalise(text: str) -> str:
    t = text.lower()
    t = _CC0_URL.sub(" cc0 ", t)
    t = _PDM_URL.sub(" public domain ", t)
    t = _CC_URL.sub(lambda m: f" cc {m.group(1).replace('-', ' ')} {m.group(2)} ", t)
    t = _ANY_URL.sub(" ", t)  # file names and paths in other URLs say nothing about the licence
    t = re.sub(r"creative ?commons", "creative commons", t)
    t = re.sub(r"[-_/,;:()\[\]{}'\"*]+", " ", t)
    t = re.sub(r"\bcc ?(?:0|zero)\b", "cc0", t)
    t = re.sub(r"\bcreative commons (?=by\b)", "cc ", t)
    t = re.sub(r"(\d)\.(?!\d)", r"\1 ", t)  # sentence dots after version numbers
    return re.sub(r"\s+", " ", t).strip()


def classify_licence(text: Optional[str]) -> LicenceVerdict:
    """Is a licence statement one that allows releasing weights trained on the work?

    Kept: public domain, CC0, CC BY (any version), BSD, MIT, Apache. Left out: share-alike,
    non-commercial, no-derivatives, GPL/LGPL/FDL, "all rights reserved", and anything without a
    recognised licence ("No known copyright restrictions" included). "X or Y" passes when one
    alternative passes; every licence named in an alternative must pass.
    """
    if not text or not text.strip():
        return LicenceVerdict(False, "", "no licence statement")
    t = _normalise(text)
    reasons = []
    for alternative in re.split(r"\bor\b", t):
        bad = [why for pattern, why in _REJECT if pattern.search(alternative)]
        names = _accepted(alternative)
        if bad:
            reasons.extend(bad)
        elif names:
            return LicenceVerdict(True, " AND ".join(dict.fromkeys(names)), "")
    if reasons:
        return LicenceVerdict(False, "", ", ".join(dict.fromkeys(reasons)))
    return LicenceVerdict(False, "", f"no recognised licence in {text.strip()[:80]!r}")
