@echo off
rem The nightly sync from cmd.exe: zivsync run stages every stream to a file in a dated run
rem folder and exits with the first failing stage's code. Settings from the config, secrets
rem from the environment.
setlocal
if "%ZIVSYNC_CONFIG%"=="" set ZIVSYNC_CONFIG=C:\ProgramData\zivsync\zivsync.toml
zivsync-run --config "%ZIVSYNC_CONFIG%" --apply --runs-dir C:\ProgramData\zivsync\runs
exit /b %ERRORLEVEL%
