"""Zivver: the SCIM client, the mapping between accounts and SCIM resources, applying a plan,
and the sandbox server that stands in for Zivver in rehearsals and tests.

May import: ``core`` and itself; never ``sources``, ``operator`` or the commands.
"""
