"""Property tests (hypothesis): the stream contract and the diff's promises, for any input."""

from __future__ import annotations

import codecs
import io

import orjson
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stages.core import planning
from stages.core.planning import DiffOptions
from stages.core.stream import Input, StreamError, StreamReader, StreamWriter

SETTINGS = settings(max_examples=200, deadline=None)

# -- strategies: stream records ------------------------------------------------------------------

# One choice per address (hypothesis pays per choice); the variety that matters is in the names.
emails = st.sampled_from([
    f"{local}{number}@{host}.{tld}"
    for local in ("ann", "zoë.ødegård", "o'neil", "x_y+z", "王芳", "-") for number in ("", "7", "2026")
    for host in ("example", "ex-ample", "xn--bcher-kva", "über") for tld in ("com", "nl", "museum")
])
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)  # orjson refuses lone surrogates
account_records = st.fixed_dictionaries(
    {
        "type": st.just("account"),
        "kind": st.sampled_from(["user", "functional"]),
        "email": emails,
        "name": any_text,
        "active": st.booleans(),
        "aliases": st.lists(emails, unique=True, max_size=3).map(sorted),
        "delegates": st.lists(emails, unique=True, max_size=3).map(sorted),
    },
    optional={
        "phone": st.none() | st.integers(10, 10**15 - 1).map("+{}".format),  # E.164
        "zivver_id": st.none() | st.uuids().map(str),
        "sso_key": st.none() | any_text,
        "sources": st.lists(st.sampled_from(["ldap", "exo", "exchange ü"]), unique=True, max_size=2),
    },
)


@st.composite
def segmented_records(draw) -> list[list[dict]]:
    """A list of account records, cut at arbitrary points into one or more segments."""
    records = draw(st.lists(account_records, max_size=10))
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=4)))
    bounds = [0, *cuts, len(records)]
    return [records[start:stop] for start, stop in zip(bounds, bounds[1:])]


def written(records: list[dict]) -> bytes:
    out = io.BytesIO()
    writer = StreamWriter(out, "accounts", "zivsync-test")
    for record in records:
        writer.write(record)
    writer.close()
    return out.getvalue()


def utf16_le_crlf(data: bytes) -> bytes:
    return codecs.BOM_UTF16_LE + data.decode("utf-8").replace("\n", "\r\n").encode("utf-16-le")


# (name, encode, code unit size, bytes of the final line end)
ENCODINGS = [
    ("utf-8", lambda data: data, 1, 1),
    ("utf-8 CRLF", lambda data: data.replace(b"\n", b"\r\n"), 1, 2),
    ("utf-16 LE", lambda data: codecs.BOM_UTF16_LE + data.decode("utf-8").encode("utf-16-le"), 2, 2),
    ("utf-16 BE", lambda data: codecs.BOM_UTF16_BE + data.decode("utf-8").encode("utf-16-be"), 2, 2),
    ("PowerShell 5.1", utf16_le_crlf, 2, 4),
]


# -- a. round trip --------------------------------------------------------------------------------


@SETTINGS
@given(segments=segmented_records(), separate_inputs=st.booleans(), powershell=st.booleans())
def test_any_records_in_any_segments_read_back_unchanged(segments, separate_inputs, powershell):
    parts = [written(records) for records in segments]
    blobs = parts if separate_inputs else [b"".join(parts)]
    if powershell:
        blobs = [utf16_le_crlf(blob) for blob in blobs]
    reader = StreamReader([Input(f"in{i}.jsonl", io.BytesIO(blob)) for i, blob in enumerate(blobs)])
    assert list(reader) == [record for records in segments for record in records]
    assert reader.complete, reader.incomplete_reasons
    assert [segment.count for segment in reader.segments] == [len(records) for records in segments]


# -- b. truncation is always detected ---------------------------------------------------------------


def starts_character(raw: bytes, offset: int, encoding) -> bool:
    """Whether a character (not a UTF-8 continuation byte, not a UTF-16 low surrogate) starts here."""
    name, _, unit, _ = encoding
    if unit == 1:
        return raw[offset] & 0xC0 != 0x80
    code_unit = raw[offset:offset + 2][::-1 if name != "utf-16 BE" else 1]
    return not 0xDC <= code_unit[0] <= 0xDF


@SETTINGS
@given(records=st.lists(account_records, min_size=2, max_size=8), encoding=st.sampled_from(ENCODINGS), data=st.data())
def test_a_truncated_stream_is_never_complete(records, encoding, data):
    _, encode, unit, line_end = encoding
    raw = encode(written(records))
    # any cut that loses more than the final line end, on a code unit boundary; half the time
    # one inside a character of several code units, where a decoder is most likely to trip
    last = (len(raw) - line_end - 1) // unit
    inside = [k for k in range(1, last + 1) if not starts_character(raw, k * unit, encoding)]
    units = (st.integers(1, last) | st.sampled_from(inside)) if inside else st.integers(1, last)
    k = unit * data.draw(units, label="units kept")
    reader = StreamReader([Input("cut.jsonl", io.BytesIO(raw[:k]))])
    try:
        got = list(reader)
    except StreamError:
        return  # refusing the stream is as safe as calling it incomplete
    assert not reader.complete
    assert got == records[: len(got)]  # what was read is a true prefix, never a mangled record


# -- c. diff --------------------------------------------------------------------------------------

DOMAINS = frozenset({"example.com", "example.nl"})
POOL = [f"{local}@{domain}" for local in ("ann", "bob", "cem", "dee", "eva", "fay", "gus", "hai")
        for domain in sorted(DOMAINS)][:15]  # at most 15 accounts on either side
NAMES = ["Ann", "Bob", "Zoë Ødegård", "王芳"]
OPTIONS = DiffOptions(claimed_domains=DOMAINS, max_suspend=10**6, max_suspend_percent=100, max_delegate_removals=10**6,
                      max_delegate_removals_percent=100, max_alias_removals=10**6, max_alias_removals_percent=100)


# Hypothesis pays per choice, so each pool address is one integer whose bits say whether it is
# an account (and then its kind, whether it is enabled, its name, which pool addresses it
# delegates to) or else whether it is an alias and of which account. Every bit 0 is the simplest
# case (no account, no alias), so failures shrink well.
ADDRESS_BITS = st.lists(st.integers(0, 2 ** (10 + len(POOL)) - 1), min_size=len(POOL), max_size=len(POOL))


def bit_field(value: int, start: int, width: int) -> int:
    return value >> start & (1 << width) - 1


@st.composite
def skeleton(draw, min_size: int = 0) -> list[tuple[str, str, bool, str, list[str], list[str]]]:
    """(email, kind, active, name, aliases, delegate candidates) for accounts with unique addresses
    from the pool; every other pool address is the alias of at most one of them."""
    bits = dict(zip(POOL, draw(ADDRESS_BITS)))
    accounts = [email for email in POOL if bit_field(bits[email], 0, 1)]
    assume(len(accounts) >= min_size)
    aliases: dict[str, list[str]] = {email: [] for email in accounts}
    for address in POOL:
        if address not in aliases and accounts and bit_field(bits[address], 5, 1):  # an alias
            aliases[accounts[bit_field(bits[address], 6, 4) % len(accounts)]].append(address)
    return [(
        email,
        ("user", "functional")[bit_field(bits[email], 1, 1)],
        bit_field(bits[email], 1, 1) == 1 or bit_field(bits[email], 2, 1) == 0,  # functional ones are active
        NAMES[bit_field(bits[email], 3, 2)],
        sorted(aliases[email]),
        sorted(address for i, address in enumerate(POOL) if bit_field(bits[email], 10 + i, 1)),
    ) for email in accounts]


@st.composite
def desired_accounts(draw, min_size: int = 0) -> list[dict]:
    """Accounts as normalize writes them: unique e-mails; aliases never an account's address nor
    two accounts' alias; delegates are other active personal accounts; functional ones active."""
    accounts = draw(skeleton(min_size))
    active_users = {email for email, kind, active, *_ in accounts if kind == "user" and active}
    return [{
        "type": "account", "kind": kind, "email": email, "name": name, "active": active, "aliases": aliases,
        "delegates": [d for d in delegates if d in active_users and d != email],
        "sso_key": None, "phone": None, "anchors": [f"ldap:{email}"], "sources": ["ldap"],
    } for email, kind, active, name, aliases, delegates in accounts]


@st.composite
def current_accounts(draw) -> list[dict]:
    """Accounts as a Zivver snapshot holds them: unique addresses, every one with a zivver_id."""
    return [{
        "type": "account", "kind": kind, "email": email, "name": name, "active": active, "aliases": aliases,
        "delegates": [d for d in delegates if d != email], "phone": None,
        "zivver_id": f"z-{number:02d}",
    } for number, (email, kind, active, name, aliases, delegates) in enumerate(draw(skeleton()))]


def as_current(desired: list[dict]) -> list[dict]:
    """The Zivver accounts a successful push of ``desired`` leaves."""
    return [{
        "type": "account", "kind": d["kind"], "email": d["email"], "name": d["name"], "active": d["active"],
        "aliases": d["aliases"], "delegates": d["delegates"], "phone": None, "zivver_id": f"z-{number:02d}",
    } for number, d in enumerate(desired)]


def essentials(account: dict) -> dict:
    """What diff promises to bring into line: active only for personal accounts."""
    fields = {"kind": account["kind"], "email": account["email"], "name": account["name"],
              "aliases": sorted(account["aliases"]), "delegates": sorted(account["delegates"])}
    if account["kind"] == "user":
        fields["active"] = account["active"]
    return fields


@SETTINGS
@given(desired=desired_accounts())
def test_diff_of_accounts_against_themselves_is_empty(desired):
    plan = planning.diff(desired, as_current(desired), OPTIONS)
    assert plan.changes == []
    assert plan.skips == []


@SETTINGS
@given(desired=desired_accounts(min_size=1), current=current_accounts())
def test_applying_the_plan_gives_every_desired_account_its_state(desired, current):
    plan = planning.diff(desired, current, OPTIONS)
    assert plan.safety.passed, plan.safety.reasons
    after = planning.apply(current, plan)
    taken = {skip["email"] for skip in plan.skips if skip["reason"] == "address_taken"}
    partly = {skip["email"] for skip in plan.skips if skip["reason"] == "delegate_withheld"}
    skipped = {skip["email"] for skip in plan.skips} - taken - partly
    assert {skip["reason"] for skip in plan.skips} <= {
        "type_conflict", "ambiguous_match", "inactive_not_in_zivver", "address_taken", "delegate_withheld"}
    # the README's rule: a delegate is a desired active personal account that has its own Zivver
    # account at that address after the plan; any other delegate is withheld, never granted
    able = {a["email"] for a in after if a["kind"] == "user" and a["active"]} & \
        {d["email"] for d in desired if d["kind"] == "user" and d["active"] and d["email"] not in skipped}
    for d in desired:
        if d["email"] in skipped:
            continue
        holders = [a for a in after if a["email"] == d["email"]]
        if d["email"] in taken and not holders:
            continue  # its very address is held by an account left alone: nothing could be done
        assert len(holders) == 1, (d["email"], holders)
        got, want = essentials(holders[0]), essentials(d)
        want["delegates"] = [x for x in want["delegates"] if x in able]
        if d["email"] in taken:  # an alias is withheld: another account still holds it
            missing = set(want["aliases"]) - set(got["aliases"])
            others = [a for a in after if a is not holders[0]]
            assert missing and all(any(m in (a["email"], *a["aliases"]) for a in others) for m in missing)
            got["aliases"] = want["aliases"]
        assert got == want


@SETTINGS
@given(desired=desired_accounts(min_size=1), current=current_accounts())
def test_applying_the_plan_disables_every_unmatched_zivver_account(desired, current):
    plan = planning.diff(desired, current, OPTIONS)
    after = planning.apply(current, plan)
    wanted = {d["email"] for d in desired}
    # left alone on purpose: a type conflict, or one of several accounts a person matched by alias
    # or matched, but kept at its address because another account left alone holds the new one
    conflicted = {skip["zivver_id"] for skip in plan.skips
                  if skip["reason"] in ("type_conflict", "ambiguous_match", "address_taken")}
    for account in after:
        matched = account["email"] in wanted or account["zivver_id"] in conflicted
        if account["zivver_id"] is None or matched:  # created, or the counterpart of a desired account
            continue
        if account["kind"] == "user":
            assert account["active"] is False, account
        else:
            assert account["delegates"] == [], account


@SETTINGS
@given(desired=desired_accounts(), current=current_accounts(), data=st.data())
def test_the_plan_does_not_depend_on_input_order(desired, current, data):
    shuffled_desired = data.draw(st.permutations(desired), label="desired shuffled")
    shuffled_current = data.draw(st.permutations(current), label="current shuffled")
    plan = planning.diff(desired, current, OPTIONS)
    again = planning.diff(shuffled_desired, shuffled_current, OPTIONS)
    assert [orjson.dumps(r) for r in again.records] == [orjson.dumps(r) for r in plan.records]


@SETTINGS
@given(desired=desired_accounts(), current=current_accounts())
def test_an_incomplete_desired_stream_withholds_exactly_the_destructive_changes(desired, current):
    """...and, since issue 12, every change that takes a delegate or an alias away: from an
    incomplete read, what is missing may be missing from the read, not from the directory."""
    def takes_away(change: dict) -> bool:
        return any(set(change["before"].get(f) or ()) - set(change["after"][f])
                   for f in ("delegates", "aliases") if f in change["after"])

    def withholds(change: dict) -> bool:
        return change["op"] in planning.DESTRUCTIVE or takes_away(change)

    def gains_an_address(change: dict) -> bool:
        def held(fields: dict) -> set:
            return {fields.get("email")} | set(fields.get("aliases") or ())
        return bool(held(change["after"]) - held(change["before"]) - {None})

    def key(change: dict) -> bytes:
        return orjson.dumps([change["op"], change["email"], change["after"]])

    complete = planning.diff(desired, current, OPTIONS)
    incomplete = planning.diff(desired, current, OPTIONS, desired_complete=False)
    assert not any(withholds(change) for change in incomplete.changes)
    # nothing new; and all that neither takes away nor needs an address another change frees
    # nothing new: only accounts the complete plan changes too (at most with less: an address
    # another change would have freed stays where it is)
    assert {c["zivver_id"] or c["email"] for c in incomplete.changes} <= \
        {c["zivver_id"] or c["email"] for c in complete.changes}
    skipped = {s["email"] for s in incomplete.skips if s["reason"] in ("desired_incomplete", "delegate_withheld")}
    for change in complete.changes:  # the rest is done, unless withheld whole (it took something away too)
        if not withholds(change) and not gains_an_address(change):
            assert key(change) in {key(c) for c in incomplete.changes} or change["email"] in skipped
    # an empty desired stream withholds them even when complete
    withheld = [c["email"] for c in complete.changes if withholds(c)] + \
        [s["email"] for s in complete.skips if s["reason"] == "desired_incomplete"]
    skipped = {s["email"] for s in incomplete.skips if s["reason"] == "desired_incomplete"}
    # withheld are changes to accounts there are (more than the complete plan's, when a change there
    # would have been settled differently: withholding errs on the side of leaving alone)
    assert skipped <= {d["email"] for d in desired} | {c["email"] for c in current}
    assert {c["email"] for c in complete.changes if c["op"] in planning.DESTRUCTIVE} <= skipped
    assert incomplete.safety.passed == (not withheld)


@SETTINGS
@given(desired=desired_accounts(min_size=1), current=current_accounts())
def test_the_planned_state_never_gives_one_address_to_two_accounts(desired, current):
    """Zivver refuses an address (e-mail or alias) that another account already holds."""
    plan = planning.diff(desired, current, OPTIONS)
    holders: dict[str, list[str]] = {}
    for account in planning.apply(current, plan):
        for address in (account["email"], *account["aliases"]):
            holders.setdefault(address, []).append(account["email"])
    assert {a: h for a, h in holders.items() if len(h) > 1} == {}
