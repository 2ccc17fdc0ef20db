"""What faces the people who run zivsync: the nightly run (stages as processes, run folders,
locks), reports of a plan or a run (text and HTML), and the mail after a run.

May import: ``core``, ``sources``, ``zivver`` and itself; never the commands (``stages/*.py``).
"""
