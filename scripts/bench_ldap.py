"""The LDAP section of ``make bench``: zivsync-extract-ldap against a Samba AD DC, next to
OpenLDAP's ``ldapsearch`` reading the same entries.

1. Provisions a throwaway Samba AD domain controller (tests/samba_dc.py) seeded with
   ``--ldap-users`` users (default 10,000) plus the named test people and groups (one group
   of 1,600 members).
2. Times, three times each (the median counts), in alternation:
   - ``zivsync-extract-ldap`` reading every person and group over LDAPS into a file;
   - ``ldapsearch -E pr=1000/noprompt`` asking the same two searches (same base, filters and
     attributes, same TLS) into a file.
   The target: zivsync within 2x of ldapsearch's wall time.
3. Measures zivsync's peak memory reading 1,000 of the users and all of them: the stream is
   written as it is read, so the two must be about the same (target: within 10 MB).

Needs Samba's AD packages and ldap-utils (``make bench`` installs them as root via
scripts/install-test-deps.sh); prints why when it can't run.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

RUNS = 3
TARGET_RATIO = 2.0
TARGET_GROWTH_MB = 10.0


def _commands(dc, work: Path, password_file: Path, people_filter: str | None = None) -> tuple[list, list]:
    from bench import _invocation
    from samba_dc import ADMIN_NT, BASE_DN

    from stages.sources.activedirectory import GROUP_FILTER, PERSON_FILTER, Scope
    scope = Scope(BASE_DN)
    zivsync = [*_invocation("extract-ldap"), "--url", dc.ldaps_url, "--base-dn", BASE_DN, "--bind-dn", ADMIN_NT,
               "--password-file", str(password_file), "--ca-file", str(dc.tls["ca"]), "-q",
               "-o", str(work / "ldap.jsonl")]
    if people_filter:
        zivsync += ["--filter", people_filter]
    search = ["ldapsearch", "-LLL", "-H", dc.ldaps_url, "-x", "-D", ADMIN_NT, "-y", str(password_file),
              "-b", BASE_DN, "-E", "pr=1000/noprompt"]
    script = (f"LDAPTLS_CACERT={dc.tls['ca']} {_quoted(search)} {_quoted([PERSON_FILTER, *scope.person_attributes()])}"
              f" > {work / 'people.ldif'} && LDAPTLS_CACERT={dc.tls['ca']} {_quoted(search)} "
              f"{_quoted([GROUP_FILTER, *scope.group_attributes()])} > {work / 'groups.ldif'}")
    return zivsync, ["bash", "-c", script]


def _quoted(words: list[str]) -> str:
    import shlex
    return " ".join(shlex.quote(w) for w in words)


def run_ldap_bench(work: Path, users: int = 10_000) -> tuple[dict, bool]:
    import ad_seed
    from bench import measure
    from samba_dc import ADMIN_PASSWORD, SambaDC, samba_installed

    if not samba_installed() or not shutil.which("ldapsearch"):
        return {"skipped": "Samba AD or ldapsearch not installed (make bench installs them as root)"}, False
    work.mkdir(parents=True, exist_ok=True)
    password_file = work / "password"
    password_file.write_text(ADMIN_PASSWORD)
    password_file.chmod(0o600)
    print(f"ldap: provisioning a Samba AD DC with {users:,} users (about a minute)...", file=sys.stderr)
    with SambaDC(work / "dc", seed=[ad_seed.seed_ldif(bulk=users, bulk_group=1600)]) as dc:
        zivsync, ldapsearch = _commands(dc, work, password_file)
        timings = {"zivsync": [], "ldapsearch": []}
        peaks = []
        for _ in range(RUNS):
            for name, command in (("zivsync", zivsync), ("ldapsearch", ldapsearch)):
                result = measure(command, work, None, work / f"{name}.err")
                if result.exit_code != 0 or result.wall_s is None:
                    return {"failed": f"{name} exited {result.exit_code}: "
                                      + (work / f"{name}.err").read_text(errors="replace")[-2000:]}, False
                timings[name].append(result.wall_s)
                if name == "zivsync":
                    peaks.append(result.peak_mb)
        people = sum(1 for line in (work / "ldap.jsonl").open("rb") if line.startswith(b'{"type":"person"'))
        small, _ = _commands(dc, work, password_file, people_filter="(sAMAccountName=bulk00*)")
        small_peak = measure(small, work, None, work / "small.err")
        small_people = sum(1 for line in (work / "ldap.jsonl").open("rb") if line.startswith(b'{"type":"person"'))
    zivsync_s, ldapsearch_s = statistics.median(timings["zivsync"]), statistics.median(timings["ldapsearch"])
    figures = {
        "users_seeded": users, "people_read": people, "runs": RUNS, "timings_s": timings,
        "zivsync_s": zivsync_s, "ldapsearch_s": ldapsearch_s, "ratio": zivsync_s / ldapsearch_s,
        "zivsync_peak_mb": max(peaks), "small_read": {"people": small_people, "peak_mb": small_peak.peak_mb},
    }
    figures["growth_mb"] = figures["zivsync_peak_mb"] - (small_peak.peak_mb or 0)
    figures["ok"] = figures["ratio"] <= TARGET_RATIO and figures["growth_mb"] <= TARGET_GROWTH_MB
    return figures, True


def print_ldap(figures: dict, ran: bool) -> None:
    print()
    if not ran:
        print(f"LDAP section did not run: {figures.get('skipped') or figures.get('failed')}")
        return
    print(f"zivsync bench, LDAP: Samba AD DC with {figures['users_seeded']:,} seeded users; "
          f"{figures['people_read']:,} people and the groups read over LDAPS, median of {figures['runs']}")
    print(f"  zivsync-extract-ldap   {figures['zivsync_s']:6.2f} s   peak {figures['zivsync_peak_mb']:6.1f} MB")
    print(f"  ldapsearch (2 paged)   {figures['ldapsearch_s']:6.2f} s")
    verdict = "OK" if figures["ratio"] <= TARGET_RATIO else "OVER"
    print(f"  ratio zivsync/ldapsearch: {figures['ratio']:.2f}x (target <= {TARGET_RATIO:.0f}x) {verdict}")
    small = figures["small_read"]
    verdict = "OK" if figures["growth_mb"] <= TARGET_GROWTH_MB else "OVER"
    print(f"  memory: {small['people']:,} people {small['peak_mb']:.1f} MB, {figures['people_read']:,} people "
          f"{figures['zivsync_peak_mb']:.1f} MB: grows {figures['growth_mb']:+.1f} MB "
          f"(target <= {TARGET_GROWTH_MB:.0f} MB) {verdict}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    folder = Path(tempfile.mkdtemp(prefix="zivsync-bench-ldap-"))
    try:
        result, ok = run_ldap_bench(folder, int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
        print_ldap(result, ok)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
