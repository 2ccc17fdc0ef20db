# The nightly sync stage by stage, for those who want to see (or change) each step: what
# `zivsync run` does in one command. By hand: .\zivsync-stages.ps1
#
# Streams are staged to files with -o, not passed through PowerShell pipes: Windows PowerShell 5.1
# (and PowerShell 7.0 to 7.3) decodes what a native program writes into text and encodes it again
# for the next one (and `>` writes UTF-16), which zivsync reads, but files are byte for byte what
# each stage wrote. PowerShell 7.4+ pipes bytes unchanged, so there a pipe works as well; both
# forms are below. Every stage's exit code is checked: the script stops at the first that fails.
# Secrets come from the environment of the account, or from files named in the config.
$ErrorActionPreference = 'Stop'

# PowerShell decodes what a native program writes (here: every stage's log, through 2>&1) with
# [Console]::OutputEncoding, the console's OEM code page (437, 850, ...) unless set, and encodes
# what it pipes into one with $OutputEncoding (ASCII in 5.1). zivsync writes UTF-8 to pipes and
# files, so accented names and the log's "before -> after" arrows only survive as UTF-8.
# https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_character_encoding
# https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_preference_variables#outputencoding
$utf8 = [System.Text.UTF8Encoding]::new($false)  # without BOM
$OutputEncoding = $utf8
try {
    [Console]::OutputEncoding = $utf8
} catch {
    # a host without a console (the ISE) cannot set it; the stages' files are UTF-8 either way
    Write-Warning "cannot set the console's output encoding to UTF-8: $_"
}

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
    # PowerShell 7.4+: bytes pass through the pipe unchanged. After a pipeline, $LASTEXITCODE is
    # only the last program's (diff's): a failing normalize would go unnoticed, and there is no
    # $PIPESTATUS. With $PSNativeCommandUseErrorActionPreference each native program in the
    # pipeline that exits non-zero raises its own error ('Program "zivsync-normalize.exe" ended
    # with non-zero exit code: 1'), which 'Stop' makes end the script, normalize's as well as diff's.
    # https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_preference_variables#psnativecommanduseerroractionpreference
    # Their logs go to the console here (two programs cannot append to one log file at once).
    & {
        $ErrorActionPreference = 'Stop'
        $PSNativeCommandUseErrorActionPreference = $true
        zivsync-normalize -i "$run\ldap.jsonl" -i "$run\exo.jsonl" | zivsync-diff --current "$run\current.jsonl" -o "$run\plan.jsonl"
    }
    if ($LASTEXITCODE -ne 0) { throw "normalize | diff exited $LASTEXITCODE" }  # the last program's, as a second check
} else {
    Invoke-Stage zivsync-normalize @('-i', "$run\ldap.jsonl", '-i', "$run\exo.jsonl", '-o', "$run\desired.jsonl")
    # exit 3: a safety limit refused the plan; nothing is applied, the report is in the log
    Invoke-Stage zivsync-diff @('-i', "$run\desired.jsonl", '--current', "$run\current.jsonl", '-o', "$run\plan.jsonl")
}
Invoke-Stage zivsync-report @("$run\plan.jsonl", '--html', "$run\plan.html")
# Review plan.html, then apply:
#   zivsync-push -i "$run\plan.jsonl" --apply -o "$run\results.jsonl"
