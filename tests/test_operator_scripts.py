"""The operator scripts (systemd, cron, PowerShell, cmd) call commands and options that exist:
they must not drift from the executables they drive. (They can't be run here: Task Scheduler
and systemd are not in the test machine; their syntax is checked where a checker exists.)
The PowerShell scripts use only cmdlets and parameters that Microsoft documents (the table below,
each with its page), and do what docs/windows-server.md says they do: checked in their text."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT

from stages.core.errors import ExitStatus
from stages.umbrella import STAGES

SCRIPTS = sorted(p for folder in ("linux", "windows") for p in (ROOT / "scripts" / folder).iterdir()
                 if not p.name.startswith("."))  # not .gitattributes
WINDOWS = ROOT / "scripts" / "windows"
POWERSHELL = sorted(WINDOWS.glob("*.ps1"))
COMMANDS = {c.name: c for c in STAGES}
CALL = re.compile(r"\b(zivsync-[a-z-]+)\b(.*)$")
OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)\b")
# zivsync-run called by its full path, held in a variable: `& $ZivsyncRun ...`, `"%ZIVSYNC_RUN%" ...`,
# and the task's arguments `$zivsyncRunArguments = "..."` are zivsync-run's options too
BY_PATH = re.compile(r'&\s*\$ZivsyncRun\b|"%ZIVSYNC_RUN%"|\$ZivsyncRunArguments\s*=\s*"?', re.IGNORECASE)
# What the nightly scripts exit with when they find no zivsync-run.exe (docs/windows-server.md)
NOT_FOUND = 9


def options_of(command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}


def code_of(line: str, script) -> str:
    code = line.split("#", 1)[0] if script.suffix in (".sh", ".ps1", ".service", ".example") else line
    return BY_PATH.sub("zivsync-run ", code)


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_command_and_option_the_script_uses_exists(script):
    calls = 0
    for line in script.read_text(encoding="utf-8").splitlines():
        code = code_of(line, script)
        for segment in code.split("|"):  # each command of a pipeline
            match = CALL.search(segment)
            if not match or match[1] in ("zivsync-nightly",):
                continue
            assert match[1] in COMMANDS, f"{script.name}: no command {match[1]}"
            used = set(OPTION.findall(match[2]))
            unknown = used - options_of(COMMANDS[match[1]])
            assert not unknown, f"{script.name}: {match[1]} has no {sorted(unknown)}"
            calls += 1
    text = "\n".join(code_of(line, script) for line in script.read_text(encoding="utf-8").splitlines())
    if script.suffix in (".sh", ".ps1", ".cmd") and script.stem == "zivsync-nightly" \
            or script.name == "Register-ZivsyncTask.ps1":
        assert re.search(r"zivsync-run .*--apply", text)  # the nightly job applies, through zivsync run
    if script.stem == "zivsync-stages":
        assert calls >= 6  # the whole chain, stage by stage


def test_the_check_catches_an_option_that_does_not_exist():
    match = CALL.search("zivsync-diff -i plan.jsonl --curent current.jsonl")
    assert set(OPTION.findall(match[2])) - options_of(COMMANDS[match[1]]) == {"--curent"}


def test_the_shell_script_parses():
    bash = shutil.which("bash")
    if bash is None and sys.platform == "win32":
        pytest.skip("the Linux script's check needs bash, which Windows does not have (py -m pytest there)")
    assert bash
    assert subprocess.run([bash, "-n", str(ROOT / "scripts" / "linux" / "zivsync-nightly.sh")], check=False).returncode == 0


# -- PowerShell: cmdlets and parameters as documented ------------------------------------------

COMMON = {"Verbose", "Debug", "ErrorAction", "WarningAction", "InformationAction", "ProgressAction",
          "ErrorVariable", "WarningVariable", "InformationVariable", "OutVariable", "OutBuffer",
          "PipelineVariable"}  # about_CommonParameters
LEARN = "https://learn.microsoft.com/powershell/module/"
CMDLETS = {  # every cmdlet the scripts use, its page, and the parameters that page lists
    "Add-Content": (LEARN + "microsoft.powershell.management/add-content",
                    {"Path", "LiteralPath", "Value", "Encoding", "NoNewline", "Force", "PassThru"}),
    "ForEach-Object": (LEARN + "microsoft.powershell.core/foreach-object",
                       {"Process", "Begin", "End", "MemberName", "InputObject"}),
    "Get-ChildItem": (LEARN + "microsoft.powershell.management/get-childitem",
                      {"Path", "LiteralPath", "Filter", "Recurse", "Force", "File", "Directory", "Name"}),
    "Get-Command": (LEARN + "microsoft.powershell.core/get-command",
                    {"Name", "CommandType", "Module", "All", "ListImported"}),
    "Get-Content": (LEARN + "microsoft.powershell.management/get-content",
                    {"Path", "LiteralPath", "Encoding", "Raw", "TotalCount", "Tail"}),
    "Get-Credential": (LEARN + "microsoft.powershell.security/get-credential",
                       {"Credential", "UserName", "Message", "Title"}),
    "Get-Date": (LEARN + "microsoft.powershell.utility/get-date", {"Date", "Format", "UFormat", "AsUTC"}),
    "Join-Path": (LEARN + "microsoft.powershell.management/join-path",
                  {"Path", "ChildPath", "AdditionalChildPath", "Resolve"}),
    "New-Item": (LEARN + "microsoft.powershell.management/new-item",
                 {"Path", "Name", "ItemType", "Value", "Force"}),
    "New-ScheduledTaskAction": (LEARN + "scheduledtasks/new-scheduledtaskaction",
                                {"Execute", "Argument", "WorkingDirectory", "Id", "CimSession", "ThrottleLimit",
                                 "AsJob"}),
    "New-ScheduledTaskPrincipal": (LEARN + "scheduledtasks/new-scheduledtaskprincipal",
                                   {"UserId", "GroupId", "LogonType", "RunLevel", "ProcessTokenSidType",
                                    "RequiredPrivilege", "Id", "CimSession", "ThrottleLimit", "AsJob"}),
    "New-ScheduledTaskSettingsSet": (LEARN + "scheduledtasks/new-scheduledtasksettingsset",
                                     {"DisallowDemandStart", "DisallowHardTerminate", "Compatibility",
                                      "DeleteExpiredTaskAfter", "AllowStartIfOnBatteries", "Disable",
                                      "MaintenanceExclusive", "Hidden", "RunOnlyIfIdle", "IdleWaitTimeout",
                                      "NetworkId", "NetworkName", "DisallowStartOnRemoteAppSession",
                                      "MaintenancePeriod", "MaintenanceDeadline", "StartWhenAvailable",
                                      "DontStopIfGoingOnBatteries", "WakeToRun", "IdleDuration", "RestartOnIdle",
                                      "DontStopOnIdleEnd", "ExecutionTimeLimit", "MultipleInstances", "Priority",
                                      "RestartCount", "RestartInterval", "RunOnlyIfNetworkAvailable",
                                      "CimSession", "ThrottleLimit", "AsJob"}),
    "New-ScheduledTaskTrigger": (LEARN + "scheduledtasks/new-scheduledtasktrigger",
                                 {"Once", "Daily", "Weekly", "AtStartup", "AtLogOn", "At", "DaysInterval",
                                  "DaysOfWeek", "WeeksInterval", "RandomDelay", "RepetitionDuration",
                                  "RepetitionInterval", "User", "CimSession", "ThrottleLimit", "AsJob"}),
    "New-TimeSpan": (LEARN + "microsoft.powershell.utility/new-timespan",
                     {"Start", "End", "Days", "Hours", "Minutes", "Seconds", "Milliseconds"}),
    "Out-Null": (LEARN + "microsoft.powershell.core/out-null", {"InputObject"}),
    "Register-ScheduledTask": (LEARN + "scheduledtasks/register-scheduledtask",
                               {"TaskName", "TaskPath", "Action", "Trigger", "Settings", "Principal", "User",
                                "Password", "RunLevel", "Description", "Force", "InputObject", "Xml",
                                "CimSession", "ThrottleLimit", "AsJob"}),
    "Resolve-Path": (LEARN + "microsoft.powershell.management/resolve-path", {"Path", "LiteralPath", "Relative"}),
    "Select-Object": (LEARN + "microsoft.powershell.utility/select-object",
                      {"Property", "ExcludeProperty", "ExpandProperty", "First", "Last", "Skip", "Unique"}),
    "Split-Path": (LEARN + "microsoft.powershell.management/split-path",
                   {"Path", "LiteralPath", "Parent", "Leaf", "Qualifier", "NoQualifier", "Resolve"}),
    "Test-Path": (LEARN + "microsoft.powershell.management/test-path",
                  {"Path", "LiteralPath", "PathType", "IsValid", "Filter"}),
    "Where-Object": (LEARN + "microsoft.powershell.core/where-object", {"FilterScript", "Property", "Value"}),
    "Write-Host": (LEARN + "microsoft.powershell.utility/write-host",
                   {"Object", "NoNewline", "Separator", "ForegroundColor", "BackgroundColor"}),
    "Write-Warning": (LEARN + "microsoft.powershell.utility/write-warning", {"Message"}),
}
OPERATORS = {"eq", "ne", "gt", "ge", "lt", "le", "like", "notlike", "match", "notmatch", "replace", "contains",
             "notcontains", "in", "notin", "is", "isnot", "as", "and", "or", "not", "xor", "join", "split", "f"}
STRING = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"`]|`.)*\"")  # '...' and "..." (with `" inside)
TOKEN = re.compile(r"\$\{[^}]*\}|\$[\w:]+|\[[^\]]*\]|\.\w+"  # variables, types and indexes, members
                   r"|(?P<cmdlet>\b[A-Z][a-z]+-[A-Z]\w*)|(?<![\w-])-(?P<parameter>[A-Za-z]\w*)|(?P<punct>[(){}|;=&])")


def powershell_statements(text: str) -> list[str]:
    """The script's code without comments, a line continued with ` joined to the next."""
    lines = [line.split("#", 1)[0].rstrip() for line in text.splitlines()]
    return [s for s in re.sub(r"`\n\s*", " ", "\n".join(lines)).splitlines() if s.strip()]


def cmdlet_parameters(text: str) -> list[tuple[str, str]]:
    """(cmdlet, parameter) for every named parameter given to a Verb-Noun command (strings left out)."""
    used = []
    for statement in powershell_statements(text):
        frames = [None]  # the command each (...) / {...} level is in
        for token in TOKEN.finditer(STRING.sub("''", statement)):
            if token["cmdlet"]:
                frames[-1] = token["cmdlet"]
            elif token["parameter"] and frames[-1] and token["parameter"].lower() not in OPERATORS:
                used.append((frames[-1], token["parameter"]))
            elif token["punct"] in ("(", "{"):
                frames.append(None)
            elif token["punct"] in (")", "}"):
                frames.pop()
            elif token["punct"]:  # | ; = &: another command begins
                frames[-1] = None
    return used


def undocumented(text: str) -> set[str]:
    functions = set(re.findall(r"^\s*function\s+([\w-]+)", text, re.MULTILINE | re.IGNORECASE))
    wrong = set()
    for cmdlet, parameter in cmdlet_parameters(text):
        if cmdlet in functions:
            continue
        if cmdlet not in CMDLETS:
            wrong.add(f"{cmdlet} (not in the table: add it, with its documentation page)")
        elif parameter not in CMDLETS[cmdlet][1] | COMMON:  # PowerShell takes any case; we write the documented
            wrong.add(f"{cmdlet} -{parameter}")
    for statement in powershell_statements(text):
        for cmdlet in re.findall(r"\b[A-Z][a-z]+-[A-Z]\w*", STRING.sub("''", statement)):
            if cmdlet not in CMDLETS and cmdlet not in functions:
                wrong.add(f"{cmdlet} (not in the table: add it, with its documentation page)")
    return wrong


@pytest.mark.parametrize("script", POWERSHELL, ids=[p.name for p in POWERSHELL])
def test_every_cmdlet_and_parameter_the_powershell_script_uses_is_documented(script):
    assert not undocumented(script.read_text(encoding="utf-8")), script.name


def test_the_cmdlet_check_catches_a_parameter_or_cmdlet_that_does_not_exist():
    assert undocumented("New-ScheduledTaskPrincipal -UserId 'x' -LogonType Password -RunLevel Limited") == set()
    assert undocumented("New-ScheduledTaskPrincipal -UserID $x -LogonTyp Password") == {
        "New-ScheduledTaskPrincipal -UserID", "New-ScheduledTaskPrincipal -LogonTyp"}
    assert undocumented("Register-ScheduledTask -TaskName 'x' `\n    -Principal (New-TimeSpan -Hour 1) -Force") == {
        "New-TimeSpan -Hour"}  # a continued line, and a command in parentheses
    assert undocumented("Get-Thing | Out-Null") == {"Get-Thing (not in the table: add it, with its documentation page)"}
    assert undocumented("Write-Host \"-NotAParameter $(1 -eq 1)\"; if ($a -ne 0) { Out-Null }") == set()


@pytest.mark.parametrize("script", POWERSHELL, ids=[p.name for p in POWERSHELL])
def test_the_powershell_script_is_ascii(script):
    # Windows PowerShell 5.1 reads a script without a BOM in the ANSI code page: keep them ASCII
    assert script.read_bytes().isascii(), script.name


# -- what the Windows scripts promise ---------------------------------------------------------

def code(script) -> str:
    return "\n".join(powershell_statements(script.read_text(encoding="utf-8")))


def test_register_runs_a_gmsa_with_logon_type_password_and_a_user_with_its_password():
    text = (WINDOWS / "Register-ZivsyncTask.ps1").read_text(encoding="utf-8")
    assert re.search(r"ParameterSetName = 'Gmsa'\)\] \[string\] \$GroupManagedServiceAccount", text)
    assert re.search(r"ParameterSetName = 'User'\)\] \[string\] \$Account", text)
    statements = code(WINDOWS / "Register-ZivsyncTask.ps1").splitlines()
    principal = [s for s in statements if "New-ScheduledTaskPrincipal" in s]
    assert len(principal) == 1
    assert re.search(r"-UserId \$GroupManagedServiceAccount -LogonType Password\b", principal[0])
    registers = [s for s in statements if re.match(r"\s*Register-ScheduledTask\b", s)]
    assert len(registers) == 2
    gmsa, user = registers
    assert "-Principal $principal" in gmsa and "-Password" not in gmsa  # Windows has the gMSA's password
    assert "-User $Account -Password $credential.GetNetworkCredential().Password" in user
    # the password is asked only for a user: Get-Credential comes after the gMSA's registration
    asked = [i for i, s in enumerate(statements) if "Get-Credential" in s]
    assert asked and all(i > statements.index(gmsa) for i in asked)


def test_register_restricts_the_data_folder_to_the_account_and_administrators():
    statements = code(WINDOWS / "Register-ZivsyncTask.ps1").splitlines()
    grants = [i for i, s in enumerate(statements) if "icacls" in s and "/grant" in s]
    assert len(grants) == 1
    grant = statements[grants[0]]
    assert "$DataFolder /inheritance:r /grant:r" in grant
    granted = re.findall(r"['\"]([^'\"]+):\(OI\)\(CI\)(\w+)['\"]", grant)
    assert sorted(granted) == sorted([("*S-1-5-32-544", "F"), ("*S-1-5-18", "F"), ("${principalName}", "M")])
    # nobody else: not Users, Authenticated Users or Everyone, by name or SID
    assert not re.search(r"Users|Everyone|S-1-5-32-545|S-1-5-11|S-1-1-0", grant)
    for i, statement in enumerate(statements):
        if re.search(r"&\s*icacls\.exe .*/(grant|reset)", statement):  # a failure stops the script
            assert "$LASTEXITCODE -ne 0" in statements[i + 1] and "throw" in statements[i + 1]


def test_register_checks_zivsync_run_before_registering_and_the_task_starts_it():
    text = code(WINDOWS / "Register-ZivsyncTask.ps1")
    registered = text.index("Register-ScheduledTask")
    exists = re.search(r"if \(-not \(Test-Path -LiteralPath \$ZivsyncRun -PathType Leaf\)\) \{\s*throw", text)
    runs = re.search(r"& \$ZivsyncRun --version 2>&1.*\n.*\n\s*if \(\$LASTEXITCODE -ne 0 .*\{\s*throw", text)
    assert exists and runs
    assert exists.start() < runs.start() < registered
    assert "New-ScheduledTaskAction -Execute $ZivsyncRun -Argument $zivsyncRunArguments" in text


def test_the_nightly_scripts_exit_with_their_own_code_when_zivsync_run_is_missing():
    assert NOT_FOUND not in {int(status) for status in ExitStatus} | {124, 130, 143}  # zivsync's own
    ps1 = code(WINDOWS / "zivsync-nightly.ps1")
    check = ps1.index("if (-not (Test-Path -LiteralPath $ZivsyncRun -PathType Leaf)) {")
    branch = ps1[check:ps1.index("}", check)]
    assert "zivsync-run.exe not found (looked in: $looked)" in branch and "ZIVSYNC_RUN" in branch
    assert "[Console]::Error.WriteLine" in branch and branch.rstrip().endswith(f"exit {NOT_FOUND}")
    assert check < ps1.index("& $ZivsyncRun --config")
    cmd = (WINDOWS / "zivsync-nightly.cmd").read_text(encoding="utf-8")
    assert cmd.index('if not exist "%ZIVSYNC_RUN%" goto not_found') < cmd.index('"%ZIVSYNC_RUN%" --config')
    branch = cmd[cmd.index("\n:not_found"):]
    assert ">&2 echo zivsync-nightly: zivsync-run.exe not found (looked in: %LOOKED%)." in branch
    assert "ZIVSYNC_RUN" in branch and branch.rstrip().endswith(f"exit /b {NOT_FOUND}")
    # cmd.exe finds a label reliably only in a file with CRLF line ends (scripts/windows/.gitattributes)
    raw = (WINDOWS / "zivsync-nightly.cmd").read_bytes()
    assert raw.count(b"\n") == raw.count(b"\r\n")
    # the code is documented where the scripts and the task are
    for script in (WINDOWS / "zivsync-nightly.ps1", WINDOWS / "zivsync-nightly.cmd"):
        assert re.search(rf"\b{NOT_FOUND}\b.{{0,20}}\b(found )?no zivsync-run\.exe", script.read_text(encoding="utf-8"),
                         re.DOTALL), script.name
    doc = (ROOT / "docs" / "windows-server.md").read_text(encoding="utf-8")
    assert re.search(rf"^\| {NOT_FOUND} \|.* found no `zivsync-run\.exe`", doc, re.MULTILINE)


def test_the_stages_script_reads_utf8_and_checks_every_stage_exit_code():
    statements = code(WINDOWS / "zivsync-stages.ps1").splitlines()
    first_stage = next(i for i, s in enumerate(statements) if CALL.search(s))
    before = "\n".join(statements[:first_stage])
    assert "$utf8 = [System.Text.UTF8Encoding]::new($false)" in before
    assert "[Console]::OutputEncoding = $utf8" in before and "$OutputEncoding = $utf8" in before
    invoke = statements.index(next(s for s in statements if s.startswith("function Invoke-Stage")))
    assert statements[invoke + 3].strip() == 'if ($LASTEXITCODE -ne 0) { throw "$Name exited $LASTEXITCODE (see $run\\log.txt)" }'
    stages = 0
    for i, statement in enumerate(statements):
        called = [m[1] for m in map(CALL.search, statement.split("|")) if m]
        if not called:
            continue
        stages += len(called)
        if statement.lstrip().startswith("Invoke-Stage "):
            continue  # Invoke-Stage checks $LASTEXITCODE
        # called directly: a pipeline, where only the last program's code lands in $LASTEXITCODE,
        # so each one's non-zero exit must raise ('Stop' with $PSNativeCommandUseErrorActionPreference)
        assert len(called) > 1, statement
        block = statements[i - 3:i]
        assert block[0].strip() == "& {" and "$ErrorActionPreference = 'Stop'" in block[1]
        assert "$PSNativeCommandUseErrorActionPreference = $true" in block[2]
        assert statements[i + 1].strip() == "}" and "$LASTEXITCODE -ne 0) { throw" in statements[i + 2]
    assert stages >= 7  # extract x2, snapshot, normalize, diff (both forms), report
