@echo off
rem The nightly sync from cmd.exe, each stage's stream staged to a file (-o), stopping at the
rem first stage that fails. Settings from the config, secrets from the environment.
setlocal
if "%ZIVSYNC_CONFIG%"=="" set ZIVSYNC_CONFIG=C:\ProgramData\zivsync\zivsync.toml
set RUN=C:\ProgramData\zivsync\runs\last
if not exist "%RUN%" mkdir "%RUN%"
zivsync-extract-ldap -o "%RUN%\ldap.jsonl" || exit /b
zivsync-normalize -i "%RUN%\ldap.jsonl" -o "%RUN%\desired.jsonl" || exit /b
zivsync-snapshot -o "%RUN%\current.jsonl" || exit /b
zivsync-diff -i "%RUN%\desired.jsonl" --current "%RUN%\current.jsonl" -o "%RUN%\plan.jsonl" || exit /b
zivsync-push -i "%RUN%\plan.jsonl" --apply -o "%RUN%\results.jsonl" || exit /b
