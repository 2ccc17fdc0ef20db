"""The core: what zivsync knows without talking to anything.

Streams and their schemas, the account mapping (the state folder), the directory model
(normalize's rules), planning (diff's rules), plan descriptions, DN handling, the one HTTP
retry policy, the errors and exit codes, the log. Pure or local-file code.

May import: the standard library, third-party libraries, ``stages`` (the version) and itself;
nothing from ``sources``, ``zivver``, ``operator`` or the commands.
"""
