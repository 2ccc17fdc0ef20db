# The nightly sync stage by stage, for those who want to see (or change) each step: what
# `zivsync run` does in one command. By hand: .\zivsync-stages.ps1
#
# Streams are staged to files with -o, not passed through PowerShell pipes: Windows PowerShell 5.1
# re-encodes what passes between native programs (and `>` writes UTF-16), which zivsync reads,
# but files are byte for byte what each stage wrote. PowerShell 7.4+ pipes bytes unchanged, so
# there a pipe works as well; both forms are below.
# Secrets come from the environment of the account, or from files named in the config.
$ErrorActionPreference = 'Stop'
$config = if ($env:ZIVSYNC_CONFIG) { $env:ZIVSYNC_CONFIG } else { 'C:\ProgramData\zivsync\zivsync.toml' }
$run = Join-Path 'C:\ProgramData\zivsync\stages' ((Get-Date).ToUniversalTime().ToString('yyyyMMddTHHmmssZ'))
New-Item -ItemType Directory -Force -Path $run | Out-Null
$env:ZIVSYNC_CONFIG = $config

function Invoke-Stage([string] $Name, [string[]] $Arguments) {
    # 'Continue' here: under 'Stop', Windows PowerShell 5.1 turns a native program's first line on
    # stderr (every stage logs there) into a terminating error. The exit code decides instead.
    $ErrorActionPreference = 'Continue'
    & $Name @Arguments 2>&1 | ForEach-Object { "$_" } | Add-Content -Encoding UTF8 (Join-Path $run 'log.txt')
    if ($LASTEXITCODE -ne 0) { throw "$Name exited $LASTEXITCODE (see $run\log.txt)" }
}

Invoke-Stage zivsync-extract-ldap @('-o', "$run\ldap.jsonl")
Invoke-Stage zivsync-extract-exo @('-o', "$run\exo.jsonl")
Invoke-Stage zivsync-snapshot @('-o', "$run\current.jsonl")
if ($PSVersionTable.PSVersion -ge [version]'7.4') {
    # PowerShell 7.4+: bytes pass through the pipe unchanged
    $ErrorActionPreference = 'Continue'
    zivsync-normalize -i "$run\ldap.jsonl" -i "$run\exo.jsonl" | zivsync-diff --current "$run\current.jsonl" -o "$run\plan.jsonl"
    if ($LASTEXITCODE -ne 0) { throw "normalize | diff exited $LASTEXITCODE" }
    $ErrorActionPreference = 'Stop'
} else {
    Invoke-Stage zivsync-normalize @('-i', "$run\ldap.jsonl", '-i', "$run\exo.jsonl", '-o', "$run\desired.jsonl")
    # exit 3: a safety limit refused the plan; nothing is applied, the report is in the log
    Invoke-Stage zivsync-diff @('-i', "$run\desired.jsonl", '--current', "$run\current.jsonl", '-o', "$run\plan.jsonl")
}
Invoke-Stage zivsync-report @("$run\plan.jsonl", '--html', "$run\plan.html")
# Review plan.html, then apply:
#   zivsync-push -i "$run\plan.jsonl" --apply -o "$run\results.jsonl"
