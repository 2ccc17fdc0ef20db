"""The local account mapping: which Zivver account belongs to which directory anchor.

Zivver's Synctool keeps this locally and never uploads it (reference/zivver.md §1.5), and
so do we: ``<state dir>/mapping.json``, written by zivsync-push after each change it applies
and read by zivsync-diff, which matches by anchor first so that a changed primary address
is a rename rather than a new account plus a suspension.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import files
from .errors import ZivsyncError

MAPPING_FILE = "mapping.json"
LOCK_FILE = "zivsync-run.lock"  # the state folder's lock: one run or push applying at a time
HELD_BY_RUN = "ZIVSYNC_STATE_LOCK_HELD"  # set by zivsync run for its stages: the path of the lock it holds
MAPPING_VERSION = 1


class StateError(Exception):
    pass


@dataclass
class MappedAccount:
    zivver_id: str
    email: str
    kind: str
    anchors: list[str] = field(default_factory=list)
    sso_key: str | None = None  # what push last sent: Zivver never returns it
    sources: list[str] = field(default_factory=list)  # the sources its directory object came from
    dn: str | None = None  # where its directory object was, last seen


@dataclass
class Mapping:
    accounts: dict[str, MappedAccount] = field(default_factory=dict)  # by zivver_id
    digest: str | None = None  # sha256 of the file read, for the plan header

    def anchor_index(self) -> dict[str, str]:
        """Zivver id by anchor."""
        return {anchor: account.zivver_id for account in self.accounts.values() for anchor in account.anchors}

    def record(self, entry: MappedAccount) -> None:
        self.accounts[entry.zivver_id] = entry

    def forget(self, zivver_id: str) -> None:
        self.accounts.pop(zivver_id, None)


def load(state_dir: str | Path | None) -> Mapping:
    """The mapping in ``state_dir``; an empty one when there is none yet (a first run)."""
    if state_dir is None:
        return Mapping()
    path = Path(state_dir) / MAPPING_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Mapping()
    except OSError as error:
        raise StateError(f"{path}: cannot read: {error.strerror}") from None
    try:
        data = orjson.loads(raw)
        if data.get("version") != MAPPING_VERSION:
            raise StateError(f"{path}: unsupported mapping version {data.get('version')!r}")
        accounts = {}
        for position, item in enumerate(data["accounts"]):
            entry = MappedAccount(
                zivver_id=item["zivver_id"], email=item["email"], kind=item["kind"],
                anchors=list(item.get("anchors", [])), sso_key=item.get("sso_key"),
                sources=list(item.get("sources", [])), dn=item.get("dn"))
            accounts[entry.zivver_id] = entry
    except StateError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise StateError(f"{path}: not a zivsync account mapping ({error})") from None
    return Mapping(accounts, hashlib.sha256(raw).hexdigest())


def save(mapping: Mapping, state_dir: str | Path) -> None:
    """Write the mapping atomically, so a push killed mid-write leaves the old one intact."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    entries = [
        {"zivver_id": e.zivver_id, "email": e.email, "kind": e.kind, "anchors": sorted(e.anchors), "sso_key": e.sso_key,
         **({"sources": sorted(e.sources)} if e.sources else {}), **({"dn": e.dn} if e.dn else {})}
        for e in sorted(mapping.accounts.values(), key=lambda e: e.zivver_id)
    ]
    data = orjson.dumps({"version": MAPPING_VERSION, "accounts": entries}, option=orjson.OPT_INDENT_2) + b"\n"
    fd, temporary = tempfile.mkstemp(prefix=f".{MAPPING_FILE}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        files.replace(temporary, directory / MAPPING_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def applying_lock(state_dir: str | Path | None):
    """Held while push applies a plan and updates the mapping: no two pushes (a nightly run's and
    one by hand, whoever started them) read and rewrite one mapping at once. zivsync run takes
    this lock for the whole run and tells its push so (HELD_BY_RUN). The operating system's lock
    (through filelock) dies with its holder: a crashed push never blocks the next."""
    if state_dir is None:
        yield
        return
    import filelock

    directory = Path(state_dir)
    lock_path = directory / LOCK_FILE
    if os.environ.get(HELD_BY_RUN) == str(lock_path.resolve()):
        yield  # the zivsync run that started this push holds it
        return
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(str(lock_path), timeout=0):
            yield
    except filelock.Timeout:
        raise ZivsyncError(f"another zivsync run or push holds {lock_path}: it is applying to Zivver with this "
                         "account mapping now; try again when it has ended (nothing was sent)") from None
