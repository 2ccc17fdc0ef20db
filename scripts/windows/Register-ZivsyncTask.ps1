#Requires -RunAsAdministrator
# Registers the nightly sync in Task Scheduler, run as a service account, and restricts the data
# folder to that account and Administrators. Run once, elevated, after installing zivsync and
# writing the config (docs/windows-server.md):
#   .\Register-ZivsyncTask.ps1 -GroupManagedServiceAccount 'CORP\svc-zivsync$'   # a gMSA: no password
#   .\Register-ZivsyncTask.ps1 -Account 'CORP\svc-zivsync'                        # a user: asks its password
# Optional: -ZivsyncRun 'C:\Program Files\zivsync\Scripts\zivsync-run.exe' -At 02:30
#   -DataFolder 'C:\ProgramData\zivsync' -Config <DataFolder>\zivsync.toml -TaskName 'zivsync nightly'
#
# The task starts zivsync-run.exe itself, not PowerShell: when Task Scheduler ends a task (End, or
# its time limit) it terminates the process it started. zivsync-run.exe takes its Python and the
# stages with it (job objects that kill them when it is gone); a powershell.exe that started
# zivsync-run.exe would not, and the run would go on unsupervised (docs/windows-server.md).
#
# Cmdlets (their parameters as documented):
#   https://learn.microsoft.com/powershell/module/scheduledtasks/new-scheduledtaskaction
#   https://learn.microsoft.com/powershell/module/scheduledtasks/new-scheduledtasktrigger
#   https://learn.microsoft.com/powershell/module/scheduledtasks/new-scheduledtasksettingsset
#   https://learn.microsoft.com/powershell/module/scheduledtasks/new-scheduledtaskprincipal
#   https://learn.microsoft.com/powershell/module/scheduledtasks/register-scheduledtask
[CmdletBinding(DefaultParameterSetName = 'User')]
param(
    # A user account with a password (asked for, and stored by Task Scheduler)
    [Parameter(Mandatory, ParameterSetName = 'User')] [string] $Account,
    # A group managed service account, 'DOMAIN\name$': Windows keeps its password, none is asked
    [Parameter(Mandatory, ParameterSetName = 'Gmsa')] [string] $GroupManagedServiceAccount,
    # The full path of zivsync-run.exe; default: the one on PATH, else the install in Program Files
    [string] $ZivsyncRun,
    [string] $DataFolder = 'C:\ProgramData\zivsync',
    [string] $Config,
    [string] $At = '02:30',
    [string] $TaskName = 'zivsync nightly',
    # Task Scheduler ends the run after this long (docs/windows-server.md: what the summary says then)
    [TimeSpan] $TimeLimit = (New-TimeSpan -Hours 4),
    # zivsync run stops a single stage that hangs after this many seconds (exit 124, in the summary)
    [int] $StageTimeout = 7200
)
$ErrorActionPreference = 'Stop'
$gmsa = $PSCmdlet.ParameterSetName -eq 'Gmsa'
$principalName = if ($gmsa) { $GroupManagedServiceAccount } else { $Account }
if ($gmsa -and -not $GroupManagedServiceAccount.EndsWith('$')) {
    throw "A gMSA's name ends with `$ ('CORP\svc-zivsync`$'); for a user account give -Account instead"
}
if (-not $Config) { $Config = Join-Path $DataFolder 'zivsync.toml' }
if (-not (Test-Path -LiteralPath $Config -PathType Leaf)) {
    throw "No config at ${Config}: write it first (docs/zivsync.sample.toml), or give -Config"
}

# -- zivsync-run.exe: found, and working, before anything is registered --------------------------
# Get-Command: https://learn.microsoft.com/powershell/module/microsoft.powershell.core/get-command
$looked = if ($ZivsyncRun) { $ZivsyncRun } else {
    $onPath = Get-Command -Name 'zivsync-run.exe' -CommandType Application -ErrorAction SilentlyContinue |
        Select-Object -First 1
    $ZivsyncRun = if ($onPath) { $onPath.Path } else { Join-Path $env:ProgramFiles 'zivsync\Scripts\zivsync-run.exe' }
    "PATH, then $ZivsyncRun"
}
if (-not (Test-Path -LiteralPath $ZivsyncRun -PathType Leaf)) {
    throw ("zivsync-run.exe not found (looked in: $looked). Install zivsync for all users " +
        "(docs/windows-server.md) or give its full path: -ZivsyncRun 'C:\...\Scripts\zivsync-run.exe'")
}
$ZivsyncRun = (Resolve-Path -LiteralPath $ZivsyncRun).Path
# The service account cannot read the profile of the administrator running this script: neither
# zivsync-run.exe nor the Python its venv was made from may live there (python.org's "Install Now"
# installs into the profile; "Install for all users" into Program Files).
$profileFolder = $env:USERPROFILE.TrimEnd('\') + '\'
$venvConfig = Join-Path (Split-Path -Parent (Split-Path -Parent $ZivsyncRun)) 'pyvenv.cfg'
$pythonHome = if (Test-Path -LiteralPath $venvConfig) {
    (Get-Content -LiteralPath $venvConfig | Where-Object { $_ -match '^\s*home\s*=' } | Select-Object -First 1) -replace '^\s*home\s*=\s*', ''
}
foreach ($path in @($ZivsyncRun, $pythonHome)) {
    if ($path -and $path.StartsWith($profileFolder, [StringComparison]::OrdinalIgnoreCase)) {
        throw ("$path is in your profile, which $principalName cannot read: install Python for all " +
            "users and zivsync in a venv outside any profile (docs/windows-server.md)")
    }
}
# It runs (as you, here; the task runs it as the service account): --version prints 'zivsync-run X.Y'
$version = & {
    # 'Continue': Windows PowerShell 5.1 under 'Stop' turns a line on stderr into an error
    $ErrorActionPreference = 'Continue'
    & $ZivsyncRun --version 2>&1 | ForEach-Object { "$_" }
}
if ($LASTEXITCODE -ne 0 -or "$version" -notmatch '^zivsync-run \S') {
    throw "$ZivsyncRun --version did not answer as zivsync-run does (exit $LASTEXITCODE): $version"
}
Write-Host "Using $ZivsyncRun ($version)"

# -- the data folder: the service account and Administrators only ---------------------------------
# C:\ProgramData lets every user read what is inside, and what is made there inherits that: the
# config, the secret files, the state and the run folders (every person's name and address) would
# be readable by all. So inheritance from C:\ProgramData is cut and the folder gets its own ACL,
# which everything inside inherits. icacls:
# https://learn.microsoft.com/windows-server/administration/windows-commands/icacls
#   /inheritance:r   remove the entries inherited from C:\ProgramData (BUILTIN\Users: read, ...)
#   /grant:r         grant, replacing (not adding to) what was granted explicitly to that account
#   (OI)(CI)         inherited by the files (object inherit) and folders (container inherit) inside
#   *S-1-5-32-544:F  BUILTIN\Administrators, full control (a SID, with its *, whatever the language)
#   *S-1-5-18:F      NT AUTHORITY\SYSTEM, full control: Windows itself, backup and antivirus agents
#   <account>:M      the service account, modify: read, write, create, delete; not change the ACL
# Well-known SIDs: https://learn.microsoft.com/windows-server/identity/ad-ds/manage/understand-security-identifiers
& icacls.exe $DataFolder /inheritance:r /grant:r '*S-1-5-32-544:(OI)(CI)F' '*S-1-5-18:(OI)(CI)F' "${principalName}:(OI)(CI)M" /Q
if ($LASTEXITCODE -ne 0) { throw "icacls could not set the ACL of $DataFolder (exit $LASTEXITCODE)" }
# What is already inside may carry entries of its own (a file copied in keeps them): /reset
# replaces each ACL with the one inherited from the folder, /T through every subfolder.
if (Get-ChildItem -LiteralPath $DataFolder -Force | Select-Object -First 1) {
    & icacls.exe (Join-Path $DataFolder '*') /reset /T /Q
    if ($LASTEXITCODE -ne 0) { throw "icacls could not reset the ACLs inside $DataFolder (exit $LASTEXITCODE)" }
}

# -- the task ---------------------------------------------------------------------------------
$runs = Join-Path $DataFolder 'runs'
$zivsyncRunArguments = "--config `"$Config`" --apply --runs-dir `"$runs`" --stage-timeout $StageTimeout"
$action = New-ScheduledTaskAction -Execute $ZivsyncRun -Argument $zivsyncRunArguments -WorkingDirectory $DataFolder
$trigger = New-ScheduledTaskTrigger -Daily -At $At
# -StartWhenAvailable: a night the server was down runs when it is back. -MultipleInstances
# IgnoreNew: never two at once (zivsync's lock would refuse the second anyway). -ExecutionTimeLimit:
# Task Scheduler ends a run that takes longer (it does not apply to a run started by hand).
$settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -MultipleInstances IgnoreNew -ExecutionTimeLimit $TimeLimit
if ($gmsa) {
    # A gMSA logs on with the password Windows fetches from Active Directory: LogonType Password,
    # and no password given (Register-ScheduledTask's -Password is for user accounts).
    $principal = New-ScheduledTaskPrincipal -UserId $GroupManagedServiceAccount -LogonType Password -RunLevel Limited
    Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -Settings $settings `
        -Principal $principal -Force | Out-Null
} else {
    # A user account: Task Scheduler stores the password to log it on when no one is logged on
    $credential = Get-Credential -UserName $Account -Message 'The password of the account the nightly sync runs as'
    Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -Settings $settings `
        -User $Account -Password $credential.GetNetworkCredential().Password -RunLevel Limited -Force | Out-Null
}
Write-Host "Registered '$TaskName': daily at $At as $principalName, ending after $TimeLimit."
Write-Host "$DataFolder is now for $principalName and Administrators only:"
& icacls.exe $DataFolder
Write-Host "Secrets: files the config names (password_file, zivver_api_key_file, ...) inside $DataFolder,"
Write-Host "or the account's environment variables (ZIVSYNC_LDAP_PASSWORD, ...). Try it now:"
Write-Host "  Start-ScheduledTask -TaskName '$TaskName'; (Get-ScheduledTaskInfo -TaskName '$TaskName').LastTaskResult"
