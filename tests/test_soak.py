"""Thirty nights in a row against zivsync-sandbox, every stage as its own process, Zivver
compared with an independent model each night (tests/soak.py; issue 16). ``make soak`` runs a
longer version (scripts/soak.py)."""

from __future__ import annotations

import pytest

from soak import Nights, Organisation


@pytest.mark.parametrize("seed", [11, 29])
def test_thirty_nights_converge_and_match_the_model(seed, tmp_path):
    org = Organisation.generate(seed, people=40, shared=5)
    figures = Nights(org, tmp_path).run(30)
    assert figures.nights == 30 and figures.refused == 1 and figures.quiet >= 3
    # every kind of churn happened, and the scripted nights too
    for event in ("delegate renamed with another delegate added", "hire", "leave", "delete", "rehire", "rename", "alias", "grant", "ungrant", "join", "part",
                  "scope", "unscope", "type conversion", "hire with a reused address", "mass leave (refused)"):
        assert org.events[event] > 0, (event, org.events)
    assert figures.changes["suspend_user"] > 0 and figures.changes["reactivate_user"] > 0
    assert figures.changes["rename_user"] > 0 and figures.changes["update_functional"] > 0


@pytest.mark.parametrize("kind", ["rename-delegate", "reuse"])
def test_the_nights_that_broke_it(kind, tmp_path):
    """Bug C (a delegate renamed the night another is added: the functional update went first and
    failed) and bug B (an address reused: the leaver's suspended account became a delegate), each
    in as few nights as it takes, as the extractors write the streams, against the sandbox."""
    script = {2: "rename-delegate"} if kind == "rename-delegate" else {2: "reuse-leave", 3: "reuse-hire"}
    org = Organisation.generate(5, people=12, shared=3)
    nights = max(script)
    assert Nights(org, tmp_path).run(nights, script).nights == nights
