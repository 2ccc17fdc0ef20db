"""zivsync: keep a Zivver organisation in step with its directory.

The top of this package holds the executables, one thin click module each (``diff.py`` is
``zivsync-diff``), over the shared command base (``cli.py``) and the umbrella (``umbrella.py``,
where every executable starts). Their machinery lives in rooms named for what they face, and
every import points down: commands → ``operator`` → ``sources`` / ``zivver`` → ``core``
(``tests/test_layout.py`` keeps it so). See README.md, "Development".
"""

__version__ = "0.1.0"
