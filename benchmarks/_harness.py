"""What every benchmark study shares: logging, worker child processes, machine facts, memory.

Standard library only at module level: worker children run in peer venvs (ModelOpt, NNCF,
AIMET-ONNX, PPQ) that have no quantkit, numpy or onnx of the project's versions.

* :func:`log` -- a timestamped line on stderr;
* :func:`run_worker` -- one measured tool in its own child process
  (``python -m benchmarks.<study>.<script> --worker NAME --params JSON --result PATH``), with
  its wall time, CPU time, ``ru_maxrss``, load averages, and its result JSON; :func:`wait_child`
  waits with a time limit and collects the child's own rusage;
* :class:`MemSampler` and :func:`serve` -- the child's side: run a worker function, write its
  result with CPU time and peak RSS (the child's own ``VmHWM``: ``ru_maxrss`` from ``wait4``
  keeps the parent's high-water mark across fork/exec);
* :func:`cpu_model`, :func:`mem_total_gib`, :func:`os_release`, :func:`package_versions`,
  :func:`utc_now`, :func:`loadavg` -- the machine description each study records next to its
  figures;
* :func:`markdown_table` -- a Markdown table from a header and rows.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: the repository root (children get it on ``PYTHONPATH`` to import ``benchmarks``).
REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def log(msg: str) -> None:
    """Print ``[HH:MM:SS] msg`` on stderr, flushed."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


# ---------------------------------------------------------------------------- machine facts


def cpu_model() -> str:
    """The CPU's ``model name`` from /proc/cpuinfo (``?`` if absent)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return "?"
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.startswith("model name")), "?")


def mem_total_gib() -> float:
    """Total memory (``MemTotal``), GiB to one decimal."""
    kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return round(kib / 1024**2, 1)


def os_release() -> str:
    """``PRETTY_NAME`` of /etc/os-release and the kernel release."""
    name = "?"
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "PRETTY_NAME":
                name = value.strip('"')
    return f"{name}; kernel {platform.release()}"


def package_versions(packages: Iterable[str], missing: str = "-") -> dict[str, str]:
    """``{"python": ..., package: version}`` from the installed distributions' metadata."""
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - optional packages
            out[pkg] = missing
    return out


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- parent side


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


def last_error(text: str) -> str:
    """The exception line of a traceback (or the last line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if ("Error" in line or "Exception" in line) and not line.startswith("File "):
            return line[:400]
    return (lines[-1] if lines else "no output")[:400]


def run_worker(module: str, name: str, params: Mapping[str, Any], *, result: Path, log_file: Path,
               python: str = sys.executable, timeout: float = 600, cwd: Path = REPO,
               env_extra: Mapping[str, str] | None = None, keep_pythonpath: bool = False,
               tail: int = 3000) -> dict[str, Any]:
    """Run worker ``name`` of ``module`` in a child process and collect what it measured.

    The child is ``python -m MODULE --worker NAME --params JSON --result RESULT`` with its
    output in ``log_file``, the repository root on ``PYTHONPATH`` (ahead of the caller's
    ``PYTHONPATH`` when ``keep_pythonpath``, else alone) and ``env_extra`` added.

    Returns:
        ``ok``, ``process_wall_s``, ``cpu_s`` and ``ru_maxrss_mb`` (the child's rusage),
        ``returncode``, ``timed_out``, ``loadavg_1min`` (before, after), ``log``; then the
        child's result JSON when it exited 0 and wrote one, else ``error_tail`` (the last
        ``tail`` characters of its output) and ``error`` (the exception line).
    """
    result.unlink(missing_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", module, "--worker", name, "--params", json.dumps(params),
           "--result", str(result)]
    env = dict(os.environ, **(env_extra or {}))
    extra = env.pop("PYTHONPATH", None) if keep_pythonpath else None
    env.pop("PYTHONPATH", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *([extra] if extra else [])])
    load0 = loadavg()
    t0 = time.perf_counter()
    with open(log_file, "w") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        rc, ru, timed_out = wait_child(proc, t0, timeout, 0.05)
    out: dict[str, Any] = {"ok": False, "process_wall_s": time.perf_counter() - t0,
                           "cpu_s": ru.ru_utime + ru.ru_stime,
                           "ru_maxrss_mb": ru.ru_maxrss / 1024, "returncode": rc,
                           "timed_out": timed_out, "loadavg_1min": [load0, loadavg()],
                           "log": str(log_file.relative_to(REPO)
                                      if log_file.is_relative_to(REPO) else log_file)}
    if rc == 0 and result.exists():
        out.update(json.loads(result.read_text()), ok=True)
    else:
        out["error_tail"] = log_file.read_text(errors="replace")[-tail:]
        out["error"] = last_error(out["error_tail"])
    return out


# ---------------------------------------------------------------------------- child side


class MemSampler(threading.Thread):
    """Samples /proc/self/status every ``period`` s; keeps the peaks of RSS, RssAnon, RssFile."""

    def __init__(self, period: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self._halt = threading.Event()

    @staticmethod
    def read() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as fp:
            for line in fp:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
        return out

    def run(self) -> None:
        while not self._halt.is_set():
            for k, v in self.read().items():
                if k in self.peak:
                    self.peak[k] = max(self.peak[k], v)
            time.sleep(self.period)

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        now = self.read()
        return {"peak_rss_mb": now["VmHWM"] / MB, "peak_anon_mb": self.peak["RssAnon"] / MB,
                "peak_file_mb": self.peak["RssFile"] / MB}


def serve(workers: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]], name: str,
          params: str, result: str) -> None:
    """Run worker ``name`` on the JSON ``params``; write its result, CPU time and memory."""
    base = MemSampler.read()
    sampler = MemSampler()
    sampler.start()
    c0 = time.process_time()
    out = workers[name](json.loads(params))
    out["worker_cpu_s"] = time.process_time() - c0
    out.update(sampler.stop())
    out["rss_at_start_mb"] = base["VmRSS"] / MB
    out["children_ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    Path(result).write_text(json.dumps(out, default=str))


# ---------------------------------------------------------------------------- tables


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table: the header, the ``---`` line, one line per row (cells as ``str``)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


__all__ = ["MB", "REPO", "MemSampler", "cpu_model", "last_error", "log", "loadavg",
           "markdown_table", "mem_total_gib", "os_release", "package_versions", "run_worker",
           "serve", "utc_now", "wait_child"]
