# Registers the nightly sync in Task Scheduler, run as a service account (with the right to log
# on as a batch job). Run once, elevated:
#   .\Register-ZivsyncTask.ps1 -Account 'CORP\svc-zivsync' -At 02:30
param(
    [Parameter(Mandatory)] [string] $Account,
    [string] $At = '02:30',
    [string] $Script = (Join-Path $PSScriptRoot 'zivsync-nightly.ps1')
)
$ErrorActionPreference = 'Stop'
$credential = Get-Credential -UserName $Account -Message 'The service account the nightly sync runs as'
$action = New-ScheduledTaskAction -Execute 'powershell.exe' `
    -Argument "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File `"$Script`""
$trigger = New-ScheduledTaskTrigger -Daily -At $At
$settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -MultipleInstances IgnoreNew `
    -ExecutionTimeLimit (New-TimeSpan -Hours 4)
Register-ScheduledTask -TaskName 'zivsync nightly' -Action $action -Trigger $trigger -Settings $settings `
    -User $Account -Password $credential.GetNetworkCredential().Password -RunLevel Limited | Out-Null
Write-Host "Registered 'zivsync nightly' at $At as $Account. Secrets: set them as that account's environment"
Write-Host "variables (ZIVSYNC_LDAP_PASSWORD, ZIVSYNC_ZIVVER_API_KEY, ...) or name files in the config."
