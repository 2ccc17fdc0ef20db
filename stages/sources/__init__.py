"""The directory systems zivsync reads: Active Directory (live over LDAP, or an LDIF export, with
the filter evaluator), Exchange Online (the admin API), Exchange on-premise (remote PowerShell),
and the one writer of directory streams they share.

May import: ``core`` and itself; never ``zivver``, ``operator`` or the commands.
"""
