# The nightly sync: `zivsync run --apply` from Task Scheduler. Registered by
# Register-ZivsyncTask.ps1; by hand: .\zivsync-nightly.ps1
#
# zivsync run starts each stage as its own process with its stream staged to a file in
# C:\ProgramData\zivsync\runs\<UTC time>\ (never through PowerShell 5.1's re-encoding pipes),
# with run.log, summary.json and report.html beside them, and mails the report if the config
# says so. Secrets come from the environment of the task's account, or from files named in the
# config. The task's result is zivsync's exit code: 3 = a safety limit refused the plan,
# 4 = a server could not be reached (see README, Exit codes).
$ErrorActionPreference = 'Stop'
$config = if ($env:ZIVSYNC_CONFIG) { $env:ZIVSYNC_CONFIG } else { 'C:\ProgramData\zivsync\zivsync.toml' }
zivsync-run --config $config --apply --runs-dir 'C:\ProgramData\zivsync\runs'
exit $LASTEXITCODE
