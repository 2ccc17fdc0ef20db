"""The package's layout stays true: executables at the top of stages/, their machinery in rooms
named for what they face, and every import pointing down (README, "Development").

Commands (stages/*.py) → operator → sources / zivver → core. Read from the source with ast, so
lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stages"

EXECUTABLES = {"extract_ldap", "extract_exo", "extract_exchange", "normalize", "diff", "snapshot", "push",
               "validate", "sandbox", "run", "check", "report", "demo"}
TOP_LEVEL = EXECUTABLES | {"__init__", "__main__", "cli", "umbrella"}
ROOMS = {"core", "sources", "zivver", "operator"}

# What each room may import from the package (the package root itself only holds __version__).
ALLOWED = {
    "core": {"core"},
    "sources": {"core", "sources"},
    "zivver": {"core", "zivver"},
    "operator": {"core", "sources", "zivver", "operator"},
    "cli": {"core", "sources", "zivver", "operator"},
    "command": {"core", "sources", "zivver", "operator", "cli", "command"},
    "umbrella": {"core", "sources", "zivver", "operator", "cli", "command"},
    "__main__": {"umbrella"},
}


def room_of(module: str) -> str:
    """'stages.core.stream' → 'core'; 'stages.diff' → 'command'; 'stages' → ''."""
    parts = module.split(".")[1:]
    if not parts or parts == ["__init__"]:
        return ""
    if parts[0] in ROOMS:
        return parts[0]
    if parts[0] in ("cli", "umbrella", "__main__"):
        return parts[0]
    return "command"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """Every module of the package that ``path`` imports, resolved to its full name."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "stages"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "stages":
                continue
            # `from . import diff` imports the module stages.diff; `from .core.stream import X` the module
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists() or \
                    (PACKAGE.parent / Path(*candidate.split("."))).is_dir()
                found.append((node.lineno, candidate if is_module else target))
    return found


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_top_level_holds_only_the_executables_and_their_base():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert rooms == ROOMS


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_every_room_says_what_lives_there_and_what_it_may_import(room):
    doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text(encoding="utf-8")))
    assert doc and "May import" in doc


@pytest.mark.parametrize("name", sorted(EXECUTABLES))
def test_every_executable_names_the_room_of_its_logic(name):
    doc = ast.get_docstring(ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8")))
    assert doc and any(f"stages/{room}/" in doc for room in ROOMS), f"stages/{name}.py: name its logic's room"


def test_no_import_points_up_or_sideways():
    wrong = []
    for path in all_modules():
        room = room_of(module_name(path))
        if room == "":
            continue
        for line, target in imported_modules(path):
            target_room = room_of(target)
            if target_room == "" or target_room == room and room not in ("cli", "umbrella", "__main__"):
                continue
            if target_room not in ALLOWED[room]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {room} imports {target} ({target_room})")
    assert wrong == []


def test_the_check_catches_an_upward_import():
    """The checker itself: a core module importing the command base, lazily, must be caught."""
    module = PACKAGE / "core" / "stream.py"
    source = module.read_text(encoding="utf-8") + "\n\ndef late():\n    from .. import cli\n"
    targets = {t for _, t in imported_modules(module, source)}
    assert "stages.cli" in targets and room_of("stages.cli") not in ALLOWED["core"]
    assert room_of("stages.sources.ldif") == "sources" and "sources" not in ALLOWED["zivver"]
