#!/usr/bin/env python3
"""The scripted change of `make demo`: what happens in Fabrikam's directory the next day.

    python scripts/demo_change.py OUT_DIR

writes OUT_DIR/directory-ldap.jsonl and OUT_DIR/directory-exchange.jsonl, the bundled sample
directory with four changes: a leaver (Lotte Meijer's account is disabled), a new hire
(Ilse Verbeek), a new delegate (Wang Fang gets Full Access to info@) and an added alias
(chloe.dubois gets chloe@fabrikam.nl). The next sync must plan exactly those.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LEAVER = "l.meijer@fabrikam.example"
ALIAS_FOR, NEW_ALIAS = "chloe.dubois@fabrikam.example", "chloe@fabrikam.nl"
NEW_HIRE = {
    "type": "person", "source": "ldap", "anchor": "ad000000-0000-4000-a000-000000000099",
    "dn": "CN=Ilse Verbeek,OU=Staff,OU=Utrecht,DC=fabrikam,DC=example", "upn": "i.verbeek@fabrikam.example",
    "sam_account_name": "i.verbeek", "sid": "S-1-5-21-3623811015-3361044348-30300820-1199",
    "mail": "i.verbeek@fabrikam.example", "addresses": ["i.verbeek@fabrikam.example"],
    "display_name": "Ilse Verbeek", "given_name": "Ilse", "surname": "Verbeek", "enabled": True,
    "mailbox": "user", "phone": None, "groups": [], "sso_key": "ad000000-0000-4000-a000-000000000099",
}
NEW_DELEGATE = {"type": "permission", "source": "exchange", "mailbox": "info@fabrikam.example",
                "trustee": "wang.fang@fabrikam.example", "rights": ["FullAccess"], "inherited": False, "deny": False}


def changed(records: list[dict], source: str) -> list[dict]:
    out = []
    for record in records:
        if record["type"] == "person" and (record["mail"] or "").lower() == LEAVER:
            record = dict(record, enabled=False)
        if record["type"] == "person" and (record["mail"] or "").lower() == ALIAS_FOR and source == "ldap":
            record = dict(record, addresses=[*record["addresses"], NEW_ALIAS])
        out.append(record)
    out.append(NEW_HIRE if source == "ldap" else NEW_DELEGATE)
    return out


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for source in ("ldap", "exchange"):
        lines = [orjson.loads(line) for line in (EXAMPLES / f"directory-{source}.jsonl").read_bytes().splitlines()]
        header, records = lines[0], changed(lines[1:-1], source)
        body = [header, *records, {"type": "end", "count": len(records)}]
        (folder / f"directory-{source}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in body))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
