"""``python -m stages COMMAND …`` is ``zivsync COMMAND …``: how zivsync run starts its stages."""

import os
import sys


def _stop_with_the_run() -> None:
    """A stage that zivsync run started must not go on alone (pushing with no lock held) when the
    run is killed outright (SIGKILL, the OOM killer), which leaves it no time to stop its stage:
    Linux then sends the stage SIGTERM. (Elsewhere the run stops its stage when it can.)"""
    parent = os.environ.pop("ZIVSYNC_RUN_PID", None)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the run died before the line above
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    _stop_with_the_run()
    from stages.umbrella import main

    main()
