"""Child processes as Windows needs them: killed with their parent, and without a window.

Linux stops a stage whose run was killed through PR_SET_PDEATHSIG (``stages/__main__.py``).
Windows has no such thing; it has Job Objects: a process assigned to a job whose handle was
created with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE is terminated when the last handle to the job
is closed, which happens when the run that holds it ends in any way, Task Scheduler's "End"
(TerminateProcess) included. References (learn.microsoft.com):

- CreateJobObjectW: /windows/win32/api/jobapi2/nf-jobapi2-createjobobjectw
- SetInformationJobObject with JobObjectExtendedLimitInformation (9) and
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION: /windows/win32/api/winnt/ns-winnt-jobobject_extended_limit_information
- AssignProcessToJobObject: /windows/win32/api/jobapi2/nf-jobapi2-assignprocesstojobobject
  (since Windows 8 a process may be in nested jobs: pip's and the venv's launchers put
  zivsync-run.exe in jobs of their own, which does not stop us adding its stages to ours)
- QueryInformationJobObject: PeakProcessMemoryUsed, the stage's peak memory for the summary
- CREATE_NO_WINDOW (process creation flags): a console program started by a run that has no
  console (a scheduled task) would otherwise open a console window of its own.

Everything here is behind ``sys.platform == "win32"``; elsewhere the functions do nothing. The
tests drive this code on Linux with a recording stand-in for kernel32.
"""

from __future__ import annotations

import ctypes
import functools
import subprocess
import sys
from ctypes import wintypes

JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9
CREATE_NO_WINDOW = 0x08000000
CREATE_NEW_PROCESS_GROUP = 0x00000200


class IO_COUNTERS(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


# Windows' DWORD is 32 bits; ctypes.wintypes.DWORD is c_ulong, 64 bits off Windows: fixed widths,
# so that the layout (and its test) is Windows' wherever it is built
DWORD, LARGE_INTEGER = ctypes.c_uint32, ctypes.c_int64


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [("PerProcessUserTimeLimit", LARGE_INTEGER), ("PerJobUserTimeLimit", LARGE_INTEGER),
                ("LimitFlags", DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", DWORD),
                ("Affinity", ctypes.c_size_t), ("PriorityClass", DWORD), ("SchedulingClass", DWORD)]


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION), ("IoInfo", IO_COUNTERS),
                ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]


@functools.lru_cache(maxsize=1)
def _kernel32():
    """kernel32 with its functions' types declared: a HANDLE is pointer-sized, and ctypes would
    take an undeclared result for a 32-bit int."""
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    declare = {
        "CreateJobObjectW": (wintypes.HANDLE, (wintypes.LPVOID, wintypes.LPCWSTR)),
        "SetInformationJobObject": (wintypes.BOOL, (wintypes.HANDLE, ctypes.c_int, wintypes.LPVOID, wintypes.DWORD)),
        "QueryInformationJobObject": (wintypes.BOOL, (wintypes.HANDLE, ctypes.c_int, wintypes.LPVOID, wintypes.DWORD,
                                                      wintypes.LPVOID)),
        "AssignProcessToJobObject": (wintypes.BOOL, (wintypes.HANDLE, wintypes.HANDLE)),
        "CloseHandle": (wintypes.BOOL, (wintypes.HANDLE,)),
        "GetConsoleWindow": (wintypes.HWND, ()),
    }
    for name, (result, arguments) in declare.items():
        function = getattr(kernel32, name)
        function.restype, function.argtypes = result, arguments
    return kernel32


def creation_flags() -> int:
    """A stage's own process group (CREATE_NEW_PROCESS_GROUP: the run can send it Ctrl-Break,
    GenerateConsoleCtrlEvent, to stop it in order), and CREATE_NO_WINDOW when this process has no
    console (a scheduled task's run); 0 elsewhere."""
    if sys.platform != "win32":
        return 0
    return CREATE_NEW_PROCESS_GROUP | (CREATE_NO_WINDOW if not _kernel32().GetConsoleWindow() else 0)


class Job:
    """A Job Object holding one stage: closing it (or this process ending) ends the stage."""

    def __init__(self, kernel32, handle):
        self.kernel32, self.handle = kernel32, handle

    def peak_mb(self) -> float | None:
        info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        if not self.kernel32.QueryInformationJobObject(self.handle, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
                                                       ctypes.byref(info), ctypes.sizeof(info), None):
            return None
        return round(info.PeakProcessMemoryUsed / 2**20, 1)

    def close(self) -> None:
        if self.handle:
            self.kernel32.CloseHandle(self.handle)
            self.handle = None


def contain(process: subprocess.Popen) -> Job | None:
    """Put a just-started stage in a kill-on-close Job Object (Windows); None elsewhere, or when
    Windows refuses (then the stage is stopped as before, when the run can). The stage runs a
    moment before it is assigned; it starts no process of its own in that moment."""
    if sys.platform != "win32":
        return None
    kernel32 = _kernel32()
    handle = kernel32.CreateJobObjectW(None, None)
    if not handle:
        return None
    job = Job(kernel32, handle)
    info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    if not (kernel32.SetInformationJobObject(handle, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
                                             ctypes.byref(info), ctypes.sizeof(info))
            and kernel32.AssignProcessToJobObject(handle, int(process._handle))):  # type: ignore[attr-defined]
        job.close()
        return None
    return job
