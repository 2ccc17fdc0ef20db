# The nightly sync, stage by stage, every stream kept in a dated folder (until `zivsync run`
# does this in one command). Registered by Register-ZivsyncTask.ps1; by hand: .\zivsync-nightly.ps1
#
# Streams go to files with -o, not through PowerShell pipes: Windows PowerShell 5.1 re-encodes
# what passes between native programs (to UTF-16 with `>`), which zivsync reads, but files are
# byte for byte what each stage wrote. PowerShell 7.4+ pipes bytes unchanged.
# Secrets come from the environment of the task's account, or from files named in the config.
$ErrorActionPreference = 'Stop'
$config = if ($env:ZIVSYNC_CONFIG) { $env:ZIVSYNC_CONFIG } else { 'C:\ProgramData\zivsync\zivsync.toml' }
$run = Join-Path 'C:\ProgramData\zivsync\runs' ((Get-Date).ToUniversalTime().ToString('yyyyMMddTHHmmssZ'))
New-Item -ItemType Directory -Force -Path $run | Out-Null
$env:ZIVSYNC_CONFIG = $config

function Invoke-Stage([string] $Name, [string[]] $Arguments) {
    & $Name @Arguments 2>> (Join-Path $run 'log.txt')
    if ($LASTEXITCODE -ne 0) { throw "$Name exited $LASTEXITCODE (see $run\log.txt)" }
}

Invoke-Stage zivsync-extract-ldap @('-o', "$run\ldap.jsonl")
Invoke-Stage zivsync-extract-exo @('-o', "$run\exo.jsonl")
Invoke-Stage zivsync-normalize @('-i', "$run\ldap.jsonl", '-i', "$run\exo.jsonl", '-o', "$run\desired.jsonl")
Invoke-Stage zivsync-snapshot @('-o', "$run\current.jsonl")
# exit 3: a safety limit refused the plan; nothing is applied, the report is in the log
Invoke-Stage zivsync-diff @('-i', "$run\desired.jsonl", '--current', "$run\current.jsonl", '-o', "$run\plan.jsonl")
Invoke-Stage zivsync-push @('-i', "$run\plan.jsonl", '--apply', '-o', "$run\results.jsonl")
