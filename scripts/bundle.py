#!/usr/bin/env python3
"""make bundle: zivsync for servers without internet access, one zip per platform, in dist/:

    dist/zivsync-<version>-win_amd64.zip      wheelhouse/, install.ps1, SHA256SUMS, README.txt, ...
    dist/zivsync-<version>-linux_x86_64.zip   wheelhouse/, install.sh,  SHA256SUMS, README.txt, ...
    dist/zivsync-<version>-SHA256SUMS         the zips' own checksums, to check them where they land

Each wheelhouse holds zivsync's wheel and a wheel of every runtime dependency for CPython 3.11,
3.12 and 3.13 on that platform (the Kerberos extra where its packages have wheels): pure-Python
wheels once, compiled ones for that platform only, no sdist (nothing to compile on the server),
nothing the tests alone need. The installer makes a venv in the folder it is given and installs
from the wheelhouse only (pip --no-index); docs/offline-install.md tells the administrator's side.

    python scripts/bundle.py                 # both platforms; the cache first (works offline once warm)
    python scripts/bundle.py --refresh       # ask the index for the newest releases (make bundle)
    python scripts/bundle.py --platform linux_x86_64

Downloads are kept in a cache (default ~/.cache/zivsync-bundle, or $ZIVSYNC_BUNDLE_CACHE): a build
resolves from it alone first, offline, and asks the index (pip's own configuration) only for what
it lacks; --refresh asks the index for everything. A zip whose inputs did not change since it was
built (its zip comment records them) is left as it is, unless --refresh or --force.

pip resolves for another platform with --platform/--python-version, but evaluates environment
markers (``sys_platform == 'win32'``, ``python_version < '3.13'``) for the machine it runs on
(pypa/pip#6117, #10050): from Linux it would leave winkerberos, colorama and sspilib out of the
Windows bundle and ask for gssapi. ``bundle.py pip-as PLATFORM PYTHON <pip arguments>`` runs pip
with the marker environment of that platform and Python; the build and tests/test_bundle.py use it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "bundle"
PYTHONS = ("3.11", "3.12", "3.13")
EXTRA = "kerberos"  # included where every package of it has a wheel for that platform and Python
GLIBC = (2, 17)  # the oldest glibc the Linux bundle runs on: manylinux_2_17 (manylinux2014) wheels
# What the sources of the bundle are: a change to any of them builds the zips again.
SOURCES = ("pyproject.toml", "README.md", "stages", "schemas", "scripts/bundle.py", "scripts/bundle",
           "scripts/windows", "scripts/linux", "docs")


def manylinux_tags(glibc: tuple[int, int]) -> list[str]:
    """Every manylinux platform tag a system with this glibc runs, newest first, legacy aliases too."""
    major, newest = glibc
    tags = []
    for minor in range(newest, 4, -1):
        tags.append(f"manylinux_{major}_{minor}_x86_64")
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(minor)
        if legacy:
            tags.append(f"{legacy}_x86_64")
    return tags


@dataclass(frozen=True)
class Platform:
    name: str  # the zip's platform part
    title: str
    tags: tuple[str, ...]  # the wheel platform tags it takes, besides "any"
    installer: str
    markers: dict  # PEP 508 environment markers, less the Python version's
    docs: tuple[str, ...]  # files of the repository the bundle carries, for reading offline
    newline: str  # of README.txt


PLATFORMS = {
    "win_amd64": Platform(
        "win_amd64", "Windows (64-bit)", ("win_amd64",), "install.ps1",
        {"os_name": "nt", "sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64"},
        ("docs/offline-install.md", "docs/windows-server.md", "docs/commands.md", "docs/zivsync.sample.toml",
         "scripts/windows"), "\r\n"),
    "linux_x86_64": Platform(
        "linux_x86_64", "Linux (x86_64)", tuple(manylinux_tags(GLIBC)), "install.sh",
        {"os_name": "posix", "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
        ("docs/offline-install.md", "docs/commands.md", "docs/zivsync.sample.toml", "scripts/linux"), "\n"),
}


def marker_environment(platform: str, python: str) -> dict[str, str]:
    """What ``platform``'s CPython ``python`` says to PEP 508 markers (the patch level: .0)."""
    return {"implementation_name": "cpython", "implementation_version": f"{python}.0",
            "platform_python_implementation": "CPython", "platform_release": "", "platform_version": "",
            "python_version": python, "python_full_version": f"{python}.0", **PLATFORMS[platform].markers}


def target_options(platform: str, python: str) -> list[str]:
    """pip's options for wheels that ``platform``'s CPython ``python`` installs (abi3 and none included)."""
    options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python,
               "--abi", "cp" + python.replace(".", "")]
    for tag in PLATFORMS[platform].tags:
        options += ["--platform", tag]
    return options


def pip_as(platform: str, python: str, arguments: list[str]) -> int:
    """pip, its environment markers those of ``platform`` and ``python`` (the module docstring)."""
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # scripts/ is no package: nothing of pip's is to be found there
    environment = marker_environment(platform, python)
    from pip._vendor.packaging import markers

    markers.default_environment = lambda: dict(environment)  # Marker.evaluate calls it each time
    from pip._internal.cli.main import main

    return main(arguments)


# -- running pip --------------------------------------------------------------------------------


def offline_environment() -> dict[str, str]:
    """This process's environment, less any pip setting: no configuration file, no index."""
    environment = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIP_")}
    environment.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return environment


def pip(arguments: list[str], *, target: tuple[str, str] | None = None, offline: bool = False,
        env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(Path(__file__).resolve()), "pip-as", *target] if target else \
        [sys.executable, "-m", "pip"]
    command += [*arguments, "--disable-pip-version-check"]
    if offline:
        command.append("--no-index")
    environment = offline_environment() if offline else dict(os.environ)
    environment.update(env or {})
    return subprocess.run(command, check=False, capture_output=True, text=True, env=environment, cwd=ROOT)


# What pip says when it could not read an index (then its "no matching distribution" means nothing)
UNREACHABLE = re.compile(r"Could not fetch URL|Retrying \(|NewConnectionError|ProxyError|Max retries exceeded|"
                         r"NameResolutionError|Temporary failure in name resolution|timed out|SSLError")


def not_found(output: str) -> list[str]:
    """The requirements pip found no distribution for, from its error output."""
    return sorted(set(re.findall(r"No matching distribution found for (\S+)", output)))


# -- the inputs ----------------------------------------------------------------------------------


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def version() -> str:
    text = (ROOT / "stages" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)[1]


def source_files() -> list[Path]:
    files = []
    for name in SOURCES:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                      and p.suffix not in (".pyc", ".pyo")]
    return sorted(files)


def fingerprint(platform: str) -> str:
    """What a zip was built from: its platform's settings and every source file's contents."""
    digest = hashlib.sha256()
    settings = {"platform": platform, "tags": PLATFORMS[platform].tags, "pythons": PYTHONS, "extra": EXTRA}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for path in source_files():
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"zivsync-bundle {digest.hexdigest()}"


def source_date_epoch() -> int:
    """The time every file of the wheel and the zips carries: SOURCE_DATE_EPOCH, else the last
    commit's, so that the same sources build the same bytes."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return max(int(os.environ["SOURCE_DATE_EPOCH"]), 315532800)
    try:
        done = subprocess.run(["git", "log", "-1", "--format=%ct"], check=False, capture_output=True, text=True,
                              cwd=ROOT)
        return max(int(done.stdout.strip()), 315532800)
    except (OSError, ValueError):
        return 315532800  # 1980-01-01, the first time a zip can hold


def default_cache() -> Path:
    if os.environ.get("ZIVSYNC_BUNDLE_CACHE"):
        return Path(os.environ["ZIVSYNC_BUNDLE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zivsync-bundle"


# -- building ------------------------------------------------------------------------------------


class BundleError(Exception):
    pass


def say(text: str) -> None:
    print(text, flush=True)


def build_wheel(cache: Path, out: Path, epoch: int) -> Path:
    """zivsync's own wheel, built by its build backend, installed from the cache (offline) once
    the cache has it."""
    build_cache = cache / "build"
    build_cache.mkdir(parents=True, exist_ok=True)
    arguments = ["wheel", "--no-deps", "--find-links", str(build_cache), "-w", str(out), str(ROOT)]
    env = {"SOURCE_DATE_EPOCH": str(epoch)}
    done = pip(arguments, offline=True, env=env)
    if done.returncode != 0:
        requires = project()["build-system"]["requires"]
        say(f"  fetching the build backend ({', '.join(requires)}) into {build_cache}")
        fetched = pip(["download", "--only-binary=:all:", "-d", str(build_cache), *requires])
        if fetched.returncode != 0:
            raise BundleError(f"could not download {requires}:\n{fetched.stdout}{fetched.stderr}")
        done = pip(arguments, offline=True, env=env)
    if done.returncode != 0:
        raise BundleError(f"building zivsync's wheel failed:\n{done.stdout}{done.stderr}")
    (wheel,) = out.glob("zivsync-*.whl")
    return wheel


class Unavailable:
    """What the index had no wheel for, remembered (cache/unavailable.json) so that a warm build
    does not ask again; --refresh asks again."""

    def __init__(self, path: Path, refresh: bool):
        self.path = path
        self.known = {} if refresh or not path.exists() else json.loads(path.read_text(encoding="utf-8"))

    def get(self, key: str) -> list[str] | None:
        return self.known.get(key)

    def put(self, key: str, missing: list[str]) -> None:
        self.known[key] = missing
        self.path.write_text(json.dumps(self.known, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def resolve(platform: str, python: str, requirement: str, wheel: Path, cache: Path, dest: Path, *,
            refresh: bool, unavailable: Unavailable) -> list[str]:
    """Download ``requirement`` and everything it needs on ``platform``'s ``python`` into ``dest``:
    from the cache alone first, else from the index too (what came from there goes into the cache).
    Returns what has no wheel (empty when all went well)."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    key = f"{platform} {python} {requirement.replace(str(wheel), wheel.name)} {project_requirements_key()}"
    arguments = ["download", *target_options(platform, python), "--find-links", str(wheels),
                 "--find-links", str(wheel.parent), "-d", str(dest), requirement]
    if not refresh:
        if pip(arguments, target=(platform, python), offline=True).returncode == 0:
            return []
        if unavailable.get(key) is not None:
            return unavailable.get(key)
    done = pip(arguments, target=(platform, python))
    if done.returncode != 0:
        missing = not_found(done.stdout + done.stderr)
        if not missing:  # not a missing wheel: a conflict, a broken index
            raise BundleError(f"pip download for {platform}, Python {python} failed:\n{done.stdout}{done.stderr}")
        for lacking in missing:
            confirm_missing(platform, python, lacking, dest.parent)
        unavailable.put(key, missing)
        return missing
    for file in dest.iterdir():
        if file.name != wheel.name and not (wheels / file.name).exists():
            shutil.copy2(file, wheels / file.name)
    return []


def confirm_missing(platform: str, python: str, requirement: str, work: Path) -> None:
    """pip's "no matching distribution" is an answer only when it could read the index: asked
    again for that one package, with pip telling (-vv) each index page it could not fetch."""
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        done = pip(["download", "--no-deps", "-vv", *target_options(platform, python), "-d", scratch, requirement],
                   target=(platform, python))
    said = done.stdout + done.stderr
    if UNREACHABLE.search(said):
        lines = "\n".join(line for line in said.splitlines() if UNREACHABLE.search(line))
        raise BundleError(f"the package index could not be reached (pip's configuration, a proxy?):\n{lines}")
    if done.returncode == 0:
        raise BundleError(f"{requirement} has a wheel for {platform}, Python {python}, yet pip did not resolve it")


_requirements_key = None


def project_requirements_key() -> str:
    """The dependencies as pyproject.toml says them: a remembered 'no wheel' holds for these only."""
    global _requirements_key
    if _requirements_key is None:
        data = project()["project"]
        text = json.dumps([data["dependencies"], data["optional-dependencies"].get(EXTRA, [])])
        _requirements_key = hashlib.sha256(text.encode()).hexdigest()[:16]
    return _requirements_key


def wheel_tags(filename: str):
    try:
        from packaging.utils import parse_wheel_filename
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.utils import parse_wheel_filename
    return parse_wheel_filename(filename)


@dataclass
class Wheelhouse:
    files: dict[str, Path]  # file name → where it is
    versions: dict[str, dict[str, str]]  # package → Python → version
    kerberos: list[str]  # the Pythons that have the extra
    missing: dict[str, list[str]]  # Python → what has no wheel (the extra left out there)


def collect(platform: str, wheel: Path, cache: Path, work: Path, *, refresh: bool,
            unavailable: Unavailable) -> Wheelhouse:
    files: dict[str, Path] = {}
    versions: dict[str, dict[str, str]] = {}
    kerberos, missing = [], {}
    for python in PYTHONS:
        dest = work / f"{platform}-{python}"
        dest.mkdir()
        lacking = resolve(platform, python, f"{wheel}[{EXTRA}]", wheel, cache, dest, refresh=refresh,
                          unavailable=unavailable)
        if lacking:
            missing[python] = lacking
            shutil.rmtree(dest)
            dest.mkdir()
            lacking = resolve(platform, python, str(wheel), wheel, cache, dest, refresh=refresh,
                              unavailable=unavailable)
            if lacking:
                raise BundleError(f"no wheel for {platform}, Python {python}: {', '.join(lacking)}")
        else:
            kerberos.append(python)
        for file in sorted(dest.iterdir()):
            if file.suffix != ".whl":
                raise BundleError(f"not a wheel: {file.name}")
            name, release, _, tags = wheel_tags(file.name)
            if not {t.platform for t in tags} & {"any", *PLATFORMS[platform].tags}:
                raise BundleError(f"{file.name} is not for {platform}")
            files.setdefault(file.name, file)
            versions.setdefault(str(name), {})[python] = str(release)
    return Wheelhouse(files, versions, kerberos, missing)


# -- the zip ---------------------------------------------------------------------------------------


def render(template: str, values: dict[str, str]) -> str:
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BundleError(f"{template}: nothing to fill in {sorted(set(left))}")
    return text


def console_scripts(wheel: Path) -> list[str]:
    """The executables zivsync's wheel installs (its entry_points.txt)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        text = archive.read(name).decode("utf-8")
    section = re.search(r"^\[console_scripts\]\n(.*?)(?:^\[|\Z)", text, re.MULTILINE | re.DOTALL)[1]
    return sorted(line.split("=", 1)[0].strip() for line in section.splitlines() if "=" in line)


def template_values(platform: str, wheelhouse: Wheelhouse, scripts: list[str], release: str) -> dict[str, str]:
    newest_first = sorted(PYTHONS, key=lambda v: tuple(map(int, v.split("."))), reverse=True)
    kerberos_first = [v for v in newest_first if v in wheelhouse.kerberos]

    def ps(items):
        return ", ".join(f"'{item}'" for item in items)

    packages = []
    for name in sorted(wheelhouse.versions, key=str.lower):
        by_python = wheelhouse.versions[name]
        releases = sorted(set(by_python.values()))
        where = "" if len(by_python) == len(PYTHONS) else f" (Python {', '.join(sorted(by_python))} only)"
        packages.append(f"  {name} {' / '.join(releases)}{where}")
    extra = sorted(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
                   for requirement in project()["project"]["optional-dependencies"][EXTRA])
    if wheelhouse.missing:
        lacking = sorted({m for ms in wheelhouse.missing.values() for m in ms})
        kerberos = (f"the {EXTRA} extra, which zivsync-extract-ldap --kerberos needs, is not in this bundle "
                    f"for Python {', '.join(sorted(wheelhouse.missing))}: {', '.join(lacking)} has no wheel for "
                    f"{PLATFORMS[platform].title} on PyPI (it is compiled against the system's Kerberos "
                    "libraries). docs/offline-install.md, Kerberos, says what to do.")
    else:
        kerberos = (f"the {EXTRA} extra ({', '.join(n for n in extra if n in wheelhouse.versions)}) is installed, "
                    "for zivsync-extract-ldap --kerberos.")
    title = f"zivsync {release} for {PLATFORMS[platform].title}: offline install bundle"
    pythons = sorted(PYTHONS, key=lambda v: tuple(map(int, v.split("."))))
    return {
        "VERSION": release, "PLATFORM": platform, "TITLE": title, "RULE": "=" * len(title),
        "PYTHONS_AND": ", ".join(pythons[:-1]) + " and " + pythons[-1],
        "PYTHONS_OR": ", ".join(pythons[:-1]) + " or " + pythons[-1], "PYTHONS_SH": " ".join(newest_first),
        "PYTHONS_PS": ps(newest_first), "KERBEROS_SH": " ".join(kerberos_first), "KERBEROS_PS": ps(kerberos_first),
        "COMMANDS_SH": " ".join(scripts), "COMMANDS_PS": ps(scripts), "GLIBC": ".".join(map(str, GLIBC)),
        "PACKAGES": "\n".join(packages),
        "KERBEROS": textwrap.fill("Kerberos: " + kerberos, width=94), "WHEELS": str(len(wheelhouse.files)),
    }


def zip_entries(platform: str, wheelhouse: Wheelhouse, values: dict[str, str]) -> dict[str, tuple[bytes, int]]:
    """Every file of the bundle, by its path in it: its bytes and its mode."""
    spec = PLATFORMS[platform]
    entries: dict[str, tuple[bytes, int]] = {}
    for name, path in sorted(wheelhouse.files.items()):
        entries[f"wheelhouse/{name}"] = (path.read_bytes(), 0o644)
    installer = render(spec.installer, values)
    if spec.installer.endswith(".ps1") and not installer.isascii():
        raise BundleError("install.ps1 must be ASCII: Windows PowerShell 5.1 reads it in the ANSI code page")
    entries[spec.installer] = (installer.encode("utf-8"), 0o755)
    readme = render(f"README-{platform}.txt", values)
    entries["README.txt"] = (readme.replace("\n", spec.newline).encode("utf-8"), 0o644)
    for name in spec.docs:
        path = ROOT / name
        if not path.exists():
            raise BundleError(f"{name} is missing: the bundle carries it")
        for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            if file.name.startswith("."):
                continue  # .gitattributes
            mode = 0o755 if file.suffix == ".sh" else 0o644
            entries[file.relative_to(ROOT).as_posix()] = (file.read_bytes(), mode)
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, (data, _) in sorted(entries.items()))
    entries["SHA256SUMS"] = (sums.encode("ascii"), 0o644)
    return entries


def write_zip(path: Path, top: str, entries: dict[str, tuple[bytes, int]], epoch: int, comment: str) -> None:
    stamp = time.gmtime(epoch)[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, (data, mode) in sorted(entries.items()):
            info = zipfile.ZipInfo(f"{top}/{name}", date_time=stamp)
            info.create_system = 3  # Unix: unzip restores the mode (install.sh's x bit)
            info.external_attr = (0o100000 | mode) << 16
            # wheels are zips already: stored as they are; text deflated
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".whl") else zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
        archive.comment = comment.encode("ascii")
    temporary = path.with_name(path.name + ".partial")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)


def zip_comment(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.comment.decode("ascii", "replace")
    except (OSError, zipfile.BadZipFile):
        return ""


def write_sums(dist: Path, release: str) -> Path:
    zips = sorted(dist.glob(f"zivsync-{release}-*.zip"))
    sums = dist / f"zivsync-{release}-SHA256SUMS"
    sums.write_text("".join(f"{hashlib.sha256(z.read_bytes()).hexdigest()}  {z.name}\n" for z in zips),
                    encoding="ascii")
    return sums


def build(platforms: list[str], dist: Path, cache: Path, *, refresh: bool, force: bool) -> list[Path]:
    release = version()
    dist.mkdir(parents=True, exist_ok=True)
    wanted = {p: dist / f"zivsync-{release}-{p}.zip" for p in platforms}
    prints = {p: fingerprint(p) for p in platforms}  # taken before the build reads a source
    todo = [p for p, z in wanted.items() if force or refresh or zip_comment(z) != prints[p]]
    for platform in sorted(set(platforms) - set(todo)):
        say(f"{wanted[platform]}: up to date (--force builds it again)")
    if todo:
        epoch = source_date_epoch()
        unavailable = Unavailable(cache / "unavailable.json", refresh)
        with tempfile.TemporaryDirectory(prefix="zivsync-bundle-") as temporary:
            work = Path(temporary)
            say(f"building zivsync {release}'s wheel (cache: {cache})")
            wheel = build_wheel(cache, work / "zivsync", epoch)
            scripts = console_scripts(wheel)
            for platform in todo:
                started = time.monotonic()
                say(f"{platform}: resolving for CPython {', '.join(PYTHONS)}"
                    f" ({'the index' if refresh else 'the cache first'})")
                wheelhouse = collect(platform, wheel, cache, work, refresh=refresh, unavailable=unavailable)
                values = template_values(platform, wheelhouse, scripts, release)
                entries = zip_entries(platform, wheelhouse, values)
                write_zip(wanted[platform], f"zivsync-{release}-{platform}", entries, epoch, prints[platform])
                size = wanted[platform].stat().st_size
                say(f"{platform}: {wanted[platform]}: {len(wheelhouse.files)} wheels, {size / 1e6:.1f} MB, "
                    f"{time.monotonic() - started:.1f} s")
                for python, lacking in sorted(wheelhouse.missing.items()):
                    say(f"  Python {python}: no wheel for {', '.join(lacking)}: the {EXTRA} extra is left out")
                for name, by_python in sorted(wheelhouse.versions.items()):
                    if len(set(by_python.values())) > 1:
                        say(f"  {name}: not one release for every Python: {by_python}")
    say(f"checksums of the zips: {write_sums(dist, release)}")
    return list(wanted.values())


def main(argv: list[str]) -> int:
    if argv[:1] == ["pip-as"]:
        if len(argv) < 3 or argv[1] not in PLATFORMS:
            print(f"usage: bundle.py pip-as {{{','.join(PLATFORMS)}}} PYTHON <pip arguments>", file=sys.stderr)
            return 2
        return pip_as(argv[1], argv[2], argv[3:])
    parser = argparse.ArgumentParser(
        prog="bundle.py", description="Build zivsync's offline install bundles, one zip per platform, into dist/ "
        "(docs/offline-install.md). Also: bundle.py pip-as PLATFORM PYTHON <pip arguments> runs pip with that "
        "platform's and Python's environment markers.")
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS),
                        help="build this platform's zip only (repeatable; default: all)")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the zips go (default: dist/)")
    parser.add_argument("--cache", type=Path, default=default_cache(),
                        help="the download cache (default: $ZIVSYNC_BUNDLE_CACHE, else ~/.cache/zivsync-bundle)")
    parser.add_argument("--refresh", action="store_true",
                        help="ask the index for the newest releases instead of taking the cache's (and build)")
    parser.add_argument("--force", action="store_true", help="build even a zip that is up to date")
    options = parser.parse_args(argv)
    started = time.monotonic()
    try:
        build(options.platform or sorted(PLATFORMS), options.dist.resolve(), options.cache.resolve(),
              refresh=options.refresh, force=options.force)
    except BundleError as error:
        print(f"bundle.py: {error}", file=sys.stderr)
        return 1
    say(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
