"""CPU time of processes from /proc (Linux): where a bench's messages spend the machine's cores."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process's main thread so far: Rasa runs its turns there."""
    return _cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat"))


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a whole process, all its threads, so far (0 once it has gone)."""
    try:
        return _cpu_seconds(Path(f"/proc/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def _cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far of the given processes, of PostgreSQL's (all its backends), of the bench and of
    the whole machine (busy time of all cores, from /proc/stat)."""
    seconds = {name: process_cpu_seconds(proc.pid) for name, proc in procs.items()}
    seconds["postgres"] = sum(process_cpu_seconds(int(entry.name)) for entry in Path("/proc").iterdir()
                              if entry.name.isdigit() and _command_of(entry) == "postgres")
    own = os.times()
    seconds["bench"] = own.user + own.system
    busy = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy
    seconds["machine"] = sum(int(v) for i, v in enumerate(busy[:8]) if i not in (3, 4)) / os.sysconf("SC_CLK_TCK")
    return seconds


def _command_of(proc_dir: Path) -> str:
    try:
        return (proc_dir / "comm").read_text().strip()
    except OSError:
        return ""
