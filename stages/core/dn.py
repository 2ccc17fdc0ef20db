"""Distinguished names, compared the way directories compare them: case-insensitively and
without the spaces people put after commas ('OU=Staff, DC=corp')."""

from __future__ import annotations

import re

_SEPARATOR = re.compile(r"\s*([,=])\s*")


def canonical(dn: str) -> str:
    """A DN for comparing: lower case, no spaces around the separators."""
    return _SEPARATOR.sub(r"\1", dn.strip()).lower()


def under(dn: str, ou: str) -> bool:
    """Whether ``dn`` is ``ou`` or below it."""
    dn, ou = canonical(dn), canonical(ou)
    return dn == ou or dn.endswith("," + ou)


def domain_of_dn(dn: str) -> tuple[str, ...]:
    """The DC= parts of a DN, lower case: its domain (corp, example for ...,DC=corp,DC=example)."""
    return tuple(value for name, _, value in (part.partition("=") for part in canonical(dn).split(","))
                 if name == "dc")
