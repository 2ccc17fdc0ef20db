"""zivsync demo: the whole nightly job on the bundled sample organisation (examples/, "Fabrikam"),
against a local zivsync-sandbox standing in for Zivver: no directory and no Zivver tenant needed.

  1. sync the sample organisation into the sandbox: read its AD from an LDIF export
     (examples/fabrikam.ldif, as ldifde writes it), plan, then apply
  2. run again: nothing is left to do
  3. a day later the directory changed (a leaver, a new hire, a new delegate, an added alias):
     the nightly job, ``zivsync run``, plans (dry run), then applies exactly those
  4. the safety nets: a broken stream is refused with its line number, a truncated one never
     yields a suspension, Active Directory alone leaves delegates as Zivver has them
  5. the report of that last run, on the terminal and as HTML (<output>/report.html)

Every stage runs as its own process, the way a person types it and shown before it runs, as
``python -m stages …``: the zivsync that runs the demo, whatever PATH says, with no shell in
between, so that the demo runs alike on Windows, Linux and macOS (``make demo`` calls it).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..core.errors import ZivsyncError
from .nightly import Step, run_folders, shown, stream_file

# The repository checkout's examples/ folder, beside the package: an install from a wheel has none.
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = ("zivsync.toml", "fabrikam.ldif", "current.jsonl", "directory-ldap.jsonl",
                 "directory-exchange.jsonl", "directory-ldap-broken.jsonl", "directory-ldap-truncated.jsonl")
# Fabrikam's Zivver organisation claims three domains; zivsync manages two of them (the config's
# claimed_domains) and leaves fabrikam-legacy.org, and the account Zivver holds there, alone.
ZIVVER_DOMAINS = ("fabrikam.example", "fabrikam.nl", "fabrikam-legacy.org")
# The sandbox and push at a pace that keeps the demo quick (Zivver's own is 50 per 10 s).
PACE = ("--rate-limit", "1000", "--rate-window", "1")
SANDBOX_START_SECONDS = 30  # Python starting cold on Windows, a virus scanner looking at it first
REFUSED = 3  # diff's exit code when a safety check refuses the plan (core.errors.ExitStatus)

# The nightly config of step 3: the directory streams written as a script of your own would write
# them, the account mapping, the run folders beside it. Secrets stay in the environment.
NIGHTLY_TOML = """\
claimed_domains = ["fabrikam.example", "fabrikam.nl"]
state_dir = "state"

[run]
directories = ["directory-next/directory-ldap.jsonl", "directory-next/directory-exchange.jsonl"]

[push]
rate_limit = 1000
rate_window = 1
"""


# -- where things are ---------------------------------------------------------------------------


def examples_folder(folder: Path = EXAMPLES) -> Path:
    """The sample organisation's files, or an error saying where to get them."""
    missing = [name for name in EXAMPLE_FILES if not (folder / name).is_file()]
    if missing:
        raise ZivsyncError(
            f"the demo needs the examples/ folder of a zivsync checkout, and {folder} "
            f"{'does not exist' if not folder.is_dir() else 'lacks ' + ', '.join(missing)}: an install from a "
            "wheel does not ship it. Clone the repository and install zivsync from it (pip install -e .), "
            "then run zivsync demo again")
    return folder


def near(path: Path) -> Path:
    """The path as a person would type it here: relative below the working folder, else absolute."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path.resolve()


def prepare_output(out: Path) -> None:
    """An empty output folder. It is emptied first only when it is an earlier demo's (it holds
    sandbox.url, the demo's first file): --output naming a folder of yours must not wipe it."""
    if out.exists() and not out.is_dir():
        raise ZivsyncError(f"{out} is a file, not a folder: name another with --output")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "sandbox.url").is_file():
            raise ZivsyncError(f"{out} is not empty and is not an earlier demo's output folder: "
                               "not emptying it; name another with --output")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


# -- showing and running ------------------------------------------------------------------------


def wants_colour() -> bool:
    """Colour for a person at a terminal only: a pipe, a file or a test gets plain text."""
    if os.environ.get("NO_COLOR") or sys.stdout is None or not sys.stdout.isatty():
        return False
    return os.name != "nt" or _windows_console_speaks_ansi()


def _windows_console_speaks_ansi() -> bool:
    """Windows consoles show ANSI colours only once asked to (virtual terminal processing)."""
    try:
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.GetStdHandle(-11)  # STD_OUTPUT_HANDLE
        mode = ctypes.c_uint32()
        if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
            return False
        return bool(kernel32.SetConsoleMode(handle, mode.value | 0x0004))  # ENABLE_VIRTUAL_TERMINAL_PROCESSING
    except (AttributeError, OSError):
        return False


@dataclass
class Demo:
    out: Path  # the output folder, as the commands name it
    examples: Path
    env: dict[str, str]  # what every stage gets: the config, Zivver's URL and API key
    colour: bool = False

    def say(self, text: str) -> None:
        print(text, flush=True)  # flushed: the stages write to the same terminal right after

    def heading(self, text: str) -> None:
        self.say("\n" + self.styled(f"== {text}", "1"))  # bold

    def show(self, step: Step) -> None:
        """The command as a person would type it to repeat it (dim)."""
        self.say(self.styled(f"$ {shown(step)}", "2"))

    def styled(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text

    def example(self, name: str) -> Path:
        return self.examples / name

    def stage(self, name: str, *args: str | Path, check: bool = True) -> int:
        """Show the command, run it as its own process, return its exit code; with ``check`` a
        failure stops the demo (what follows would tell a story that did not happen)."""
        step = Step(name, tuple(str(arg) for arg in args))
        self.show(step)
        code = wait(subprocess.Popen(argv(step), stdin=subprocess.DEVNULL, env=self.env))
        if check and code != 0:
            raise ZivsyncError(f"the demo stopped: {shown(step)} ended with exit code {code}")
        return code


def argv(step: Step) -> list[str]:
    # -P: nothing imported from the working folder, which may be a checkout (as zivsync run does)
    return [sys.executable, "-P", "-m", "stages", *step.argv()]


def wait(process: subprocess.Popen) -> int:
    """The process's exit code; stopped with the demo when the demo is stopped."""
    try:
        return process.wait()
    except KeyboardInterrupt as stop:
        # Ctrl-C at a console reached the stage too: give it a moment to say how far it got
        # (SIGTERM reached the demo only: stop the stage at once)
        stop_process(process, grace=5 if getattr(stop, "signum", signal.SIGINT) == signal.SIGINT else 0)
        raise


def stop_process(process: subprocess.Popen, grace: float = 0) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    if process.poll() is None:
        process.terminate()  # SIGTERM; TerminateProcess on Windows
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stage_environment(config: Path) -> dict[str, str]:
    """Ours, without any ZIVSYNC_ setting of your own (a real Zivver's URL, a state folder):
    the demo talks to its sandbox and reads its sample only."""
    environment = {k: v for k, v in os.environ.items() if not k.upper().startswith("ZIVSYNC_")}
    environment["ZIVSYNC_CONFIG"] = str(config)  # claimed domains, AD's base DN, safety limits
    # the sandbox accepts the key the stages send
    environment["ZIVSYNC_ZIVVER_API_KEY"] = f"demo-key-{secrets.token_hex(8)}"
    return environment


# -- the sandbox --------------------------------------------------------------------------------


@contextlib.contextmanager
def sandbox(demo: Demo) -> Iterator[subprocess.Popen]:
    """A zivsync-sandbox seeded with Fabrikam's Zivver accounts, its URL in the stages'
    environment; stopped when the demo ends, however it ends."""
    claims = [arg for domain in ZIVVER_DOMAINS for arg in ("--claimed-domain", domain)]
    step = Step("sandbox", ("--port", "0", "--seed", str(demo.example("current.jsonl")), *PACE, *claims))
    url_file, log_file = demo.out / "sandbox.url", demo.out / "sandbox.log"
    demo.show(step)
    with open(url_file, "wb") as url_out, open(log_file, "wb") as log_out:  # the sandbox keeps its own
        process = subprocess.Popen(argv(step), stdin=subprocess.DEVNULL, stdout=url_out, stderr=log_out,
                                   env=demo.env)
    try:
        demo.env["ZIVSYNC_ZIVVER_URL"] = sandbox_url(process, url_file, log_file)
        demo.say(f"Zivver sandbox at {demo.env['ZIVSYNC_ZIVVER_URL']} (pid {process.pid}), "
                 f"its log in {log_file}")
        yield process
    finally:
        stop_process(process)


def sandbox_url(process: subprocess.Popen, url_file: Path, log_file: Path) -> str:
    """The first line the sandbox prints is its URL (it picks a free port)."""
    deadline = time.monotonic() + SANDBOX_START_SECONDS
    while time.monotonic() < deadline:
        text = url_file.read_text(encoding="utf-8", errors="replace")
        if "\n" in text:
            return text.splitlines()[0].strip()
        if process.poll() is not None:
            break
        time.sleep(0.05)
    said = log_file.read_text(encoding="utf-8", errors="replace").strip()
    raise ZivsyncError(f"zivsync-sandbox did not start within {SANDBOX_START_SECONDS} s"
                       + (f": {said}" if said else f" (see {log_file})"))


# -- streams ------------------------------------------------------------------------------------


def records(path: Path) -> list[dict]:
    """A stream's records, plain or gzip-compressed as run folders keep them; none if it is missing."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


def changes(path: Path) -> list[dict]:
    return [r for r in records(path) if r.get("type") == "change"]


# The next day in Fabrikam's directory (what the demo writes before its second night): a leaver (Lotte Meijer's
# account is disabled), a new hire (Ilse Verbeek), a new delegate (Wang Fang gets Full Access to
# info@) and an added alias (chloe.dubois gets chloe@fabrikam.nl). The next sync must plan exactly those.
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


def next_day(records_of_today: list[dict], source: str) -> list[dict]:
    out = []
    for record in records_of_today:
        if record["type"] == "person" and (record["mail"] or "").lower() == LEAVER:
            record = dict(record, enabled=False)
        if record["type"] == "person" and (record["mail"] or "").lower() == ALIAS_FOR and source == "ldap":
            record = dict(record, addresses=[*record["addresses"], NEW_ALIAS])
        out.append(record)
    out.append(NEW_HIRE if source == "ldap" else NEW_DELEGATE)
    return out


def write_next_day(examples: Path, folder: Path) -> list[Path]:
    """folder/directory-ldap.jsonl and directory-exchange.jsonl: the sample directory, a day later."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source in ("ldap", "exchange"):
        lines = records(examples / f"directory-{source}.jsonl")
        header, changed = lines[0], next_day(lines[1:-1], source)
        body = [header, *changed, {"type": "end", "count": len(changed)}]
        target = folder / f"directory-{source}.jsonl"
        target.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in body))
        written.append(target)
    return written


# -- the story ----------------------------------------------------------------------------------


def extract(demo: Demo, run: str) -> Path:
    """Read Fabrikam's AD from its LDIF export into <out>/<run>/directory-ldap.jsonl. The base DN and
    the region of phone numbers typed without +31 come from the [extract-ldap] table of the config."""
    (demo.out / run).mkdir(parents=True, exist_ok=True)
    ldap = demo.out / run / "directory-ldap.jsonl"
    demo.stage("extract-ldap", "--config", demo.env["ZIVSYNC_CONFIG"], "--ldif", demo.example("fabrikam.ldif"),
               "-o", ldap)
    return ldap


def sync(demo: Demo, run: str, ldap: Path, exchange: Path) -> None:
    """One nightly run into <out>/<run>, stage by stage: snapshot Zivver, normalize, diff."""
    folder = demo.out / run
    folder.mkdir(parents=True, exist_ok=True)
    demo.stage("snapshot", "-q", "-o", folder / "current.jsonl")
    demo.stage("normalize", "-q", "-i", ldap, "-i", exchange, "-o", folder / "desired.jsonl")
    demo.stage("diff", "-i", folder / "desired.jsonl", "--current", folder / "current.jsonl",
               "--state", demo.out / "state", "-o", folder / "plan.jsonl")


def apply(demo: Demo, run: str) -> None:
    folder = demo.out / run
    results = folder / "results.jsonl"
    demo.stage("push", "-q", "-i", folder / "plan.jsonl", "--apply", "--state", demo.out / "state",
               "-o", results, *PACE)
    applied = sum(1 for r in records(results) if r.get("status") == "applied")
    demo.say(f"applied: {applied} changes (results in {results})")


def first_and_second_sync(demo: Demo) -> None:
    exchange = demo.example("directory-exchange.jsonl")
    demo.heading("1. First sync: read AD from its LDIF export, snapshot Zivver, normalize with Exchange, "
                 "diff → the plan to review")
    ldap = extract(demo, "run1")
    demo.stage("validate", ldap, exchange)
    sync(demo, "run1", ldap, exchange)
    demo.heading("   ...reviewed: apply it")
    apply(demo, "run1")

    demo.heading("2. Run again right away: nothing is left to do")
    sync(demo, "run2", extract(demo, "run2"), exchange)


def next_night(demo: Demo) -> Path:
    """Step 3: the directory a day later, and the nightly job as one command. Returns its run folder."""
    demo.heading("3. The next day: a leaver, a new hire, a new delegate, an added alias. "
                 "The nightly job as one command")
    written = write_next_day(demo.examples, demo.out / "directory-next")
    demo.say(f"the directory a day later (Lotte Meijer left, Ilse Verbeek joined, Wang Fang got Full Access "
             f"to info@, chloe.dubois got chloe@fabrikam.nl): {', '.join(str(p) for p in written)}")
    nightly = demo.out / "nightly.toml"
    nightly.write_text(NIGHTLY_TOML, encoding="utf-8")
    demo.say(f"the nightly config: {nightly}")
    demo.stage("run", "--config", nightly)
    demo.stage("run", "--config", nightly, "-q", "--apply")
    last = run_folders(demo.out / "runs")[-1]
    demo.say(f"the run folder: {' '.join(sorted(p.name for p in last.iterdir()))}")
    return last


def safety_nets(demo: Demo, last: Path) -> None:
    """Step 4: what zivsync refuses to do, each shown on a stream made to tempt it."""
    current = stream_file(last, "current")  # Zivver as the last run read it
    demo.heading("4a. A broken stream is refused with its line number")
    if demo.stage("validate", demo.example("directory-ldap-broken.jsonl"), check=False) == 0:
        raise ZivsyncError("unexpected: the broken stream validated")

    demo.heading("4b. A truncated directory stream: the safety net works. diff withholds every suspension "
                 "it would have planned and refuses the plan (exit 3), saying why")
    desired, plan = demo.out / "desired-truncated.jsonl", demo.out / "plan-truncated.jsonl"
    demo.stage("normalize", "-q", "-i", demo.example("directory-ldap-truncated.jsonl"),
               "-i", demo.example("directory-exchange.jsonl"), "-o", desired)
    status = demo.stage("diff", "-q", "-i", desired, "--current", current, "--state", demo.out / "state",
                        "-o", plan, check=False)
    suspensions = sum(1 for change in changes(plan) if change.get("op") == "suspend_user")
    demo.say(f"diff exit code {status} (3 = refused by a safety check); suspensions planned: {suspensions}")
    if status != REFUSED or suspensions:
        raise ZivsyncError("unexpected: the truncated stream was not refused, or it planned suspensions")

    demo.heading("4c. Active Directory alone: it speaks for people, not for Full Access, "
                 "so delegates stay as Zivver has them")
    desired, plan = demo.out / "desired-ldap-only.jsonl", demo.out / "plan-ldap-only.jsonl"
    demo.stage("normalize", "-q", "-i", demo.example("directory-ldap.jsonl"), "-o", desired)
    demo.stage("diff", "-q", "-i", desired, "--current", current, "--state", demo.out / "state",
               "-o", plan, check=False)  # its exit code is not the point here; the plan is
    planned = changes(plan)
    delegate_changes = sum(1 for change in planned if not change.get("op", "").startswith("create_")
                           and any("delegates" in (change.get(side) or {}) for side in ("before", "after")))
    demo.say(f"an LDAP-only plan: {len(planned)} changes, of which change delegates: {delegate_changes}")
    header = next(iter(records(plan)), {})
    if "unmanaged" in header:  # what the plan leaves as Zivver has it, and for how many accounts
        demo.say('"unmanaged":' + orjson.dumps(header["unmanaged"]).decode())
    if delegate_changes:
        raise ZivsyncError("unexpected: a plan from Active Directory alone changes delegates")


def report(demo: Demo, last: Path) -> None:
    demo.heading("5. The report of the last run, for people: on the terminal, and as a page to attach "
                 "to a change ticket")
    html = demo.out / "report.html"
    demo.stage("report", last, "--html", html)
    demo.say(f"the HTML report: {html}")


def run_demo(out: Path, examples: Path = EXAMPLES, colour: bool | None = None) -> None:
    """The whole demo into ``out``; raises ZivsyncError when a step does not do what it says."""
    examples = near(examples_folder(examples))
    prepare_output(out)
    demo = Demo(out, examples, stage_environment(examples / "zivsync.toml"),
                wants_colour() if colour is None else colour)
    demo.heading("Start a local Zivver (zivsync-sandbox), holding Fabrikam's accounts as they are today")
    with sandbox(demo):
        first_and_second_sync(demo)
        last = next_night(demo)
        safety_nets(demo, last)
        report(demo, last)
    demo.heading(f"Done: every stream of every run is in {out}{os.sep}")
