"""The command reference (docs/commands.md) is what the executables say of themselves."""

from __future__ import annotations

import importlib.util

from helpers import ROOT

from stages.umbrella import STAGES


def load_generator():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "scripts" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_command_reference_is_up_to_date():
    generator = load_generator()
    assert (ROOT / "docs" / "commands.md").read_text(encoding="utf-8") == generator.reference(), \
        "docs/commands.md is out of date: run make docs"


def test_every_command_is_in_the_reference_and_the_readme_points_there():
    text = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    for command in STAGES:
        assert f"## {command.name}\n" in text and f"Usage: {command.name} [OPTIONS]" in text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/commands.md" in readme
    for command in STAGES:
        assert f"### {command.name}" in readme, f"the README has no section on {command.name}"


def test_the_sample_config_is_up_to_date_and_every_option_in_it_loads(tmp_path):
    import re
    import tomllib

    from stages import cli

    generator = load_generator()
    sample = ROOT / "docs" / "zivsync.sample.toml"
    text = sample.read_text(encoding="utf-8")
    assert text == generator.sample_config(), "docs/zivsync.sample.toml is out of date: run make docs"
    # every commented-out option, switched on, is one the config loader knows for that stage
    active = re.sub(r"^# ([a-z_]+ = .*?)(  # required)?$", r"\1", text, flags=re.MULTILINE)
    data = tomllib.loads(active)
    path = tmp_path / "zivsync.toml"
    for command in STAGES:
        if not cli._config_params(command):
            assert cli.section_name(command) not in data
            continue
        section = data[cli.section_name(command)]
        assert set(section) == set(cli._config_params(command)), command.name
        typed = {key: value for key, value in section.items() if value != "…"}  # "…": no default to show
        cli.config_defaults({cli.section_name(command): typed}, command, path)  # raises on an unknown key or type
