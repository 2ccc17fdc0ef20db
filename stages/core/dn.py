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
