"""make soak: the long version of the nightly soak test (tests/soak.py): a larger organisation
over more nights, every stage as its own process against zivsync-sandbox, Zivver compared with
the independent model every night. Prints the figures; exits 1 on the first night that fails."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from soak import Nights, Organisation  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--shared", type=int, default=20)
    parser.add_argument("--nights", type=int, default=90)
    parser.add_argument("--seed", type=int, action="append", help="repeatable; default 1 and 2")
    args = parser.parse_args()
    for seed in args.seed or [1, 2]:
        org = Organisation.generate(seed, people=args.people, shared=args.shared)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="zivsync-soak-") as folder:
            try:
                figures = Nights(org, Path(folder)).run(args.nights)
            except AssertionError as failure:
                print(f"seed {seed}: FAILED: {failure}", file=sys.stderr)
                return 1
        seconds = time.monotonic() - started
        print(f"seed {seed}: {args.people} people, {args.shared} shared mailboxes, {figures.nights} nights in "
              f"{seconds:.0f} s ({seconds / figures.nights:.1f} s a night): every night converged and matched the model")
        print(f"  churn events: {sum(org.events.values())}: "
              + ", ".join(f"{event} {n}" for event, n in sorted(org.events.items())))
        print(f"  changes applied: {sum(figures.changes.values())}: "
              + ", ".join(f"{op} {n}" for op, n in sorted(figures.changes.items())))
        print(f"  writes to Zivver: {figures.writes}, requests in push: {figures.requests}; "
              f"refused nights: {figures.refused} (no request sent), quiet nights: {figures.quiet} (no write)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
