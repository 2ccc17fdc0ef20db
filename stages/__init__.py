"""zivsync: keep a Zivver organisation in step with its directory.

Each module of this package is one stage of the pipeline (see README.md); the
shared pieces (streams, the command-line base, configuration, logging) sit beside them.
"""

__version__ = "0.1.0"
