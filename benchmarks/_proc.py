"""Child processes of the benchmarks: wait with a time limit and collect their resource use."""

from __future__ import annotations

import os
import resource
import subprocess
import time


def wait_child(proc: subprocess.Popen[bytes], t0: float, timeout: float,
               poll: float = 0.05) -> tuple[int, resource.struct_rusage, bool]:
    """Wait for ``proc`` (started at ``perf_counter() == t0``), killing it after ``timeout`` s.

    Returns:
        ``(exit code as subprocess reports it, the child's rusage, whether it timed out)``.
        ``wait4`` gives the child's own CPU time and peak RSS, which ``Popen.wait`` does not.
    """
    timed_out = False
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            timed_out = True
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(poll)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    return code, ru, timed_out
