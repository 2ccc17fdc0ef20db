# The nightly sync: `zivsync run --apply`, by hand or from a scheduler of your own:
#   powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\zivsync-nightly.ps1 [-ZivsyncRun <path>]
# (Register-ZivsyncTask.ps1 registers a task that starts zivsync-run.exe itself, with the same
# options: see docs/windows-server.md for why.)
#
# zivsync run starts each stage as its own process with its stream staged to a file in
# C:\ProgramData\zivsync\runs\<UTC time>\ (never through PowerShell 5.1's re-encoding pipes),
# with run.log, summary.json and report.html beside them, and mails the report if the config
# says so. Secrets come from the environment of the account, or from files named in the config.
# The exit code is zivsync's: 3 = a safety limit refused the plan, 4 = a server could not be
# reached, 124 = a stage took longer than --stage-timeout (README, Exit codes); and 9 = this
# script found no zivsync-run.exe to run (nothing was started).
param(
    # The full path of zivsync-run.exe. Default: $env:ZIVSYNC_RUN, else zivsync-run.exe on PATH,
    # else the install docs/windows-server.md describes (C:\Program Files\zivsync\Scripts).
    [string] $ZivsyncRun = $env:ZIVSYNC_RUN
)
$ErrorActionPreference = 'Stop'
$config = if ($env:ZIVSYNC_CONFIG) { $env:ZIVSYNC_CONFIG } else { 'C:\ProgramData\zivsync\zivsync.toml' }
$runs = 'C:\ProgramData\zivsync\runs'

# Get-Command: https://learn.microsoft.com/powershell/module/microsoft.powershell.core/get-command
$looked = if ($ZivsyncRun) { "$ZivsyncRun (-ZivsyncRun or ZIVSYNC_RUN)" } else {
    $onPath = Get-Command -Name 'zivsync-run.exe' -CommandType Application -ErrorAction SilentlyContinue |
        Select-Object -First 1
    $ZivsyncRun = if ($onPath) { $onPath.Path } else { Join-Path $env:ProgramFiles 'zivsync\Scripts\zivsync-run.exe' }
    "PATH, then $ZivsyncRun"
}
if (-not (Test-Path -LiteralPath $ZivsyncRun -PathType Leaf)) {
    # Not found: say where we looked and how to fix it, on stderr, and exit 9 (none of zivsync's
    # own exit codes), so that a scheduler's "last result" tells this apart from a failed run.
    [Console]::Error.WriteLine("zivsync-nightly: zivsync-run.exe not found (looked in: $looked).")
    [Console]::Error.WriteLine('Install zivsync (docs/windows-server.md), or give the full path of zivsync-run.exe')
    [Console]::Error.WriteLine('with -ZivsyncRun or the environment variable ZIVSYNC_RUN. Nothing was run.')
    exit 9
}
# --stage-timeout: a stage that hangs is stopped and recorded (exit 124) before a scheduler's own
# time limit ends the whole run unrecorded.
& $ZivsyncRun --config $config --apply --runs-dir $runs --stage-timeout 7200
exit $LASTEXITCODE
