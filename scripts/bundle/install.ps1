# Installs zivsync @VERSION@ from this bundle's wheelhouse, with no internet access: a virtual
# environment in the folder you name, pip installing from wheelhouse\ only (--no-index), and a
# bin\ folder of launchers (zivsync.cmd, zivsync-run.cmd, ...) to put on PATH.
#
#   powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\install.ps1 'C:\Program Files\zivsync'
#   .\install.ps1 'C:\Program Files\zivsync' -Python 3.12        # that version, through the py launcher
#   .\install.ps1 'C:\Program Files\zivsync' -Python 'D:\Python312\python.exe'
#   .\install.ps1 'C:\Program Files\zivsync' -Force              # replace an earlier install there
#
# The folder becomes the virtual environment itself: zivsync-run.exe lands in <folder>\Scripts,
# where docs/windows-server.md (Task Scheduler) expects it for C:\Program Files\zivsync. Every file
# is checked against SHA256SUMS before anything is installed. Written for Windows PowerShell 5.1
# (Windows Server 2016 and later) and PowerShell 7; docs/offline-install.md has the whole story.
#
# Cmdlets (their parameters as documented):
#   https://learn.microsoft.com/powershell/module/microsoft.powershell.utility/get-filehash
#   https://learn.microsoft.com/powershell/module/microsoft.powershell.management/set-content
#   https://learn.microsoft.com/powershell/module/microsoft.powershell.management/remove-item
#   https://learn.microsoft.com/powershell/module/microsoft.powershell.core/set-strictmode
# The py launcher's -X.Y: https://docs.python.org/3/using/windows.html#python-launcher-for-windows
[CmdletBinding()]
param(
    # Where to install: a new or empty folder (or, with -Force, an earlier install of zivsync)
    [Parameter(Mandatory = $true, Position = 0)] [string] $Target,
    # A Python version for the py launcher (3.12), or the full path of a python.exe. Default: the
    # newest of @PYTHONS_AND@ that the py launcher knows, else python.exe on PATH.
    [string] $Python,
    # Replace the earlier install of zivsync in $Target (its venv and bin\; nothing else there)
    [switch] $Force
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 2.0

$Version = '@VERSION@'
$Pythons = @(@PYTHONS_PS@)            # the Pythons this bundle has wheels for, newest first
$KerberosPythons = @(@KERBEROS_PS@)   # those for which it has the Kerberos extra (winkerberos)
$Commands = @(@COMMANDS_PS@)
$Bundle = $PSScriptRoot
# The folder as a full path, whether it exists yet or not
$Target = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Target)
$Wheelhouse = Join-Path $Bundle 'wheelhouse'

function Stop-Install([string] $Message) {
    Write-Host "install.ps1: $Message" -ForegroundColor Red
    exit 1
}

# -- 1. every file of the bundle is as it was built: SHA256SUMS ----------------------------------
Write-Host 'Checking the files against SHA256SUMS...'
$sums = Join-Path $Bundle 'SHA256SUMS'
if (-not (Test-Path -LiteralPath $sums -PathType Leaf)) { Stop-Install "no SHA256SUMS in $Bundle" }
$listed = @{}
foreach ($line in Get-Content -LiteralPath $sums) {
    if (-not $line) { continue }
    if ($line -notmatch '^([0-9a-fA-F]{64}) [ *](.+)$') { Stop-Install "SHA256SUMS: a line I cannot read: $line" }
    $expected = $Matches[1]
    $relative = $Matches[2]
    $file = Join-Path $Bundle ($relative -replace '/', '\')
    if (-not (Test-Path -LiteralPath $file -PathType Leaf)) { Stop-Install "$relative is missing: unpack the whole zip again" }
    $actual = (Get-FileHash -LiteralPath $file -Algorithm SHA256).Hash
    if ($actual -ne $expected) {  # -ne compares without case: Get-FileHash writes upper case
        Stop-Install "$relative does not match SHA256SUMS: the bundle is damaged or was changed; do not install it"
    }
    $listed[$relative] = $true
}
foreach ($wheel in Get-ChildItem -LiteralPath $Wheelhouse -File) {
    if (-not $listed.ContainsKey("wheelhouse/$($wheel.Name)")) {
        Stop-Install "wheelhouse\$($wheel.Name) is not in SHA256SUMS: it is not part of this bundle; remove it"
    }
}
Write-Host "  $($listed.Count) files match."

# -- 2. a Python this bundle has wheels for ----------------------------------------------------
# Runs a Python with arguments; its output lines, or nothing when it fails or is not there.
# ('Continue': Windows PowerShell 5.1 under 'Stop' turns a line on stderr into an error.)
function Invoke-Python([string] $Exe, [string[]] $Arguments) {
    & {
        $ErrorActionPreference = 'Continue'
        $out = & $Exe @Arguments 2>$null
        if ($LASTEXITCODE -eq 0) { $out }
    }
}
$WhereAmI = 'import sys; print(sys.executable)'
# '3.12-64': its version, and 64-bit or not (a 32-bit Python on 64-bit Windows cannot use win_amd64 wheels)
$WhichVersion = 'import sys; print(*sys.version_info[:2], sep=chr(46), end=chr(45)); print(sys.maxsize.bit_length() + 1)'
$hasPy = [bool] (Get-Command -Name 'py.exe' -CommandType Application -ErrorAction SilentlyContinue)
$pythonExe = $null
if ($Python -match '^\d+\.\d+$') {
    if (-not $hasPy) { Stop-Install "-Python $Python needs the py launcher, which is not installed: give the path of python.exe" }
    $pythonExe = Invoke-Python 'py.exe' @("-$Python", '-c', $WhereAmI) | Select-Object -First 1
    if (-not $pythonExe) { Stop-Install "the py launcher has no Python $Python (py -0p lists what it has)" }
} elseif ($Python) {
    if (-not (Test-Path -LiteralPath $Python -PathType Leaf)) { Stop-Install "no such file: $Python" }
    $pythonExe = (Resolve-Path -LiteralPath $Python).Path
} else {
    if ($hasPy) {
        foreach ($candidate in $Pythons) {
            $pythonExe = Invoke-Python 'py.exe' @("-$candidate", '-c', $WhereAmI) | Select-Object -First 1
            if ($pythonExe) { break }
        }
    }
    if (-not $pythonExe) {
        $onPath = Get-Command -Name 'python.exe' -CommandType Application -ErrorAction SilentlyContinue |
            Select-Object -First 1
        if ($onPath) { $pythonExe = $onPath.Path }
    }
    if (-not $pythonExe) {
        Stop-Install "found no Python $($Pythons -join ', ') (py launcher, or python.exe on PATH): install one from python.org for all users, then run this again"
    }
}
$said = Invoke-Python $pythonExe @('-c', $WhichVersion) | Select-Object -First 1
if (-not $said) { Stop-Install "$pythonExe does not run (is it the Microsoft Store stub? give another with -Python)" }
$pythonVersion, $bits = $said -split '-'
if ($bits -ne '64') { Stop-Install "$pythonExe is a $bits-bit Python: this bundle is for 64-bit Python (win_amd64)" }
if ($Pythons -notcontains $pythonVersion) {
    Stop-Install ("$pythonExe is Python $pythonVersion; this bundle has wheels for Python $($Pythons -join ', ') only: " +
        "install one of those (python.org, for all users) and name it with -Python")
}
Write-Host "Python $pythonVersion`: $pythonExe"

# -- 3. the virtual environment: the target folder itself --------------------------------------
$binFolder = Join-Path $Target 'bin'
if (Test-Path -LiteralPath $Target) {
    $earlier = Test-Path -LiteralPath (Join-Path $Target 'Scripts\zivsync.exe') -PathType Leaf
    $empty = -not (Get-ChildItem -LiteralPath $Target -Force | Select-Object -First 1)
    if ($earlier -and -not $Force) {
        Stop-Install "$Target already holds zivsync: add -Force to replace it (stop the scheduled task first)"
    } elseif (-not $earlier -and -not $empty) {
        Stop-Install "$Target is not empty and holds no earlier zivsync: name a new or empty folder"
    }
    if ($earlier) {  # -Force: the earlier venv and launchers go, whatever else is there stays
        foreach ($part in @('Lib', 'Include', 'Scripts', 'share', 'bin', 'pyvenv.cfg')) {
            $path = Join-Path $Target $part
            if (Test-Path -LiteralPath $path) { Remove-Item -LiteralPath $path -Recurse -Force }
        }
    }
}
Write-Host "Creating the virtual environment in $Target..."
& {
    $ErrorActionPreference = 'Continue'  # as in Invoke-Python: pip and venv may warn on stderr
    & $pythonExe -m venv $Target
}
if ($LASTEXITCODE -ne 0) { Stop-Install "$pythonExe -m venv $Target failed (exit $LASTEXITCODE)" }
$venvPython = Join-Path $Target 'Scripts\python.exe'

# -- 4. zivsync and what it needs, from the wheelhouse only ------------------------------------
$requirement = "zivsync==$Version"
if ($KerberosPythons -contains $pythonVersion) { $requirement = "zivsync[kerberos]==$Version" }
Write-Host "Installing $requirement from $Wheelhouse (no index)..."
# No pip configuration file and no PIP_ variable of this machine may add an index or a constraint.
$savedConfig = [Environment]::GetEnvironmentVariable('PIP_CONFIG_FILE')
[Environment]::SetEnvironmentVariable('PIP_CONFIG_FILE', 'nul')  # os.devnull: pip reads no configuration file
try {
    & {
        $ErrorActionPreference = 'Continue'
        & $venvPython -m pip --isolated install --no-index --find-links $Wheelhouse --only-binary ':all:' `
            --disable-pip-version-check --no-warn-script-location --quiet $requirement
    }
    $installed = $LASTEXITCODE
} finally {
    [Environment]::SetEnvironmentVariable('PIP_CONFIG_FILE', $savedConfig)
}
if ($installed -ne 0) { Stop-Install "pip could not install $requirement from the wheelhouse (exit $installed)" }

# -- 5. bin\: a launcher for every executable ---------------------------------------------------
New-Item -ItemType Directory -Path $binFolder -Force | Out-Null
foreach ($command in $Commands) {
    $exe = Join-Path $Target "Scripts\$command.exe"
    if (-not (Test-Path -LiteralPath $exe -PathType Leaf)) { Stop-Install "pip did not install $exe" }
    Set-Content -LiteralPath (Join-Path $binFolder "$command.cmd") -Encoding Ascii `
        -Value "@`"%~dp0..\Scripts\$command.exe`" %*"
}
$reported = Invoke-Python (Join-Path $Target 'Scripts\zivsync.exe') @('--version') | Select-Object -First 1
if ($reported -ne "zivsync $Version") { Stop-Install "zivsync --version said '$reported', not 'zivsync $Version'" }

Write-Host ''
Write-Host "zivsync $Version is installed in $Target ($($Commands.Count) executables in $binFolder)."
Write-Host 'To run it from any prompt, add its bin folder to PATH, for every user (elevated PowerShell):'
Write-Host "  [Environment]::SetEnvironmentVariable('Path', [Environment]::GetEnvironmentVariable('Path', 'Machine') + ';$binFolder', 'Machine')"
Write-Host 'or for this window only:'
Write-Host "  `$env:Path += ';$binFolder'"
Write-Host "Task Scheduler starts $(Join-Path $Target 'Scripts\zivsync-run.exe') itself (docs/windows-server.md)."
