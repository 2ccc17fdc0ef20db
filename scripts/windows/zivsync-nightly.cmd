@echo off
rem The nightly sync from cmd.exe: zivsync run stages every stream to a file in a dated run
rem folder and exits with the first failing stage's code. Settings from the config, secrets
rem from the environment or from files the config names.
rem Exit codes: zivsync run's (README, Exit codes), and 9 when no zivsync-run.exe was found
rem (nothing was run): set ZIVSYNC_RUN to its full path, or install it (docs\windows-server.md).
setlocal
if not defined ZIVSYNC_CONFIG set "ZIVSYNC_CONFIG=C:\ProgramData\zivsync\zivsync.toml"
rem Which zivsync-run.exe: ZIVSYNC_RUN if set, else the first on PATH (where.exe), else the
rem install in Program Files. ("if not defined" is checked when run, not when the line is read.)
set "LOOKED=%ZIVSYNC_RUN%"
if not defined ZIVSYNC_RUN for /f "delims=" %%p in ('where zivsync-run.exe 2^>nul') do if not defined ZIVSYNC_RUN set "ZIVSYNC_RUN=%%p"
if not defined ZIVSYNC_RUN set "ZIVSYNC_RUN=%ProgramFiles%\zivsync\Scripts\zivsync-run.exe"
if not defined LOOKED set "LOOKED=PATH, then %ZIVSYNC_RUN%"
if not exist "%ZIVSYNC_RUN%" goto not_found
rem --stage-timeout: a stage that hangs is stopped and recorded (exit 124) before a scheduler's
rem own time limit ends the whole run unrecorded.
"%ZIVSYNC_RUN%" --config "%ZIVSYNC_CONFIG%" --apply --runs-dir C:\ProgramData\zivsync\runs --stage-timeout 7200
exit /b %ERRORLEVEL%

:not_found
>&2 echo zivsync-nightly: zivsync-run.exe not found (looked in: %LOOKED%).
>&2 echo Install zivsync (docs\windows-server.md), or set ZIVSYNC_RUN to the full path of zivsync-run.exe.
>&2 echo Nothing was run.
exit /b 9
