"""Peak RSS of a whole process tree, sampled from /proc (Linux), and the tree's CPU time."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field

PAGE = os.sysconf("SC_PAGE_SIZE")


def _ppid_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        rest = stat[stat.rfind(b")") + 2 :].split()
        parents[int(entry.name)] = int(rest[1])
    return parents


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppid_map().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: pages shared by N processes count 1/N each, so the sum over a
    tree is its real footprint (RSS counts a forked worker's shared pages again)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (Linux PSI), %."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class TreeSampler:
    """Samples the summed RSS of ``pid`` and all its descendants every ``interval`` seconds."""

    pid: int
    interval: float = 0.2
    peak_bytes: int = 0
    peak_pss_bytes: int = 0
    peak_processes: int = 0
    peak_process_bytes: int = 0  # the largest single process's RSS
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss, processes)
    loads: list[float] = field(default_factory=list)
    pressures: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TreeSampler:
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        last_load = 0.0
        while not self._stop.is_set():
            pids = tree_pids(self.pid)
            each = [rss_bytes(p) for p in pids]
            total = sum(each)
            self.peak_process_bytes = max(self.peak_process_bytes, max(each, default=0))
            now = time.perf_counter() - self._started
            self.samples.append((now, total, len(pids)))
            self.peak_bytes = max(self.peak_bytes, total)
            pss = sum(pss_bytes(p) for p in pids)
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
            self.peak_processes = max(self.peak_processes, len(pids))
            if now - last_load >= 5:
                self.loads.append(load_average())
                pressure = cpu_pressure()
                if pressure is not None:
                    self.pressures.append(pressure)
                last_load = now
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def peak_in(self, start_fraction: float, end_fraction: float) -> int:
        """Peak RSS within a fraction of the run's duration (e.g. first vs last half)."""
        if not self.samples:
            return 0
        end = self.samples[-1][0]
        lo, hi = start_fraction * end, end_fraction * end
        return max((rss for t, rss, _ in self.samples if lo <= t <= hi), default=0)


@dataclass
class TreeResult:
    returncode: int
    wall_seconds: float
    cpu_user_seconds: float
    cpu_system_seconds: float
    peak_rss_bytes: int
    peak_pss_bytes: int
    peak_processes: int
    peak_process_rss_bytes: int
    peak_rss_first_half: int
    peak_rss_second_half: int
    load_average: list[float]
    cpu_pressure: list[float]
    rss_timeline: list[tuple[float, int]]
    stdout: str


def run_tree(
    cmd: list[str], env: dict[str, str], log_path: str, cwd: str | None = None
) -> TreeResult:
    """Run ``cmd``; measure wall time, CPU time of the tree (children are waited for, so their
    rusage rolls up) and the peak of the tree's summed RSS."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        sampler = TreeSampler(proc.pid).start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
    with open(log_path) as log:
        stdout = log.read()
    timeline = [(round(t, 1), rss) for t, rss, _ in sampler.samples[:: max(1, int(1 / 0.2))]]
    return TreeResult(
        returncode=proc.returncode,
        wall_seconds=wall,
        cpu_user_seconds=usage.ru_utime,
        cpu_system_seconds=usage.ru_stime,
        peak_rss_bytes=sampler.peak_bytes,
        peak_pss_bytes=sampler.peak_pss_bytes,
        peak_processes=sampler.peak_processes,
        peak_process_rss_bytes=sampler.peak_process_bytes,
        peak_rss_first_half=sampler.peak_in(0.0, 0.5),
        peak_rss_second_half=sampler.peak_in(0.5, 1.0),
        load_average=sampler.loads,
        cpu_pressure=sampler.pressures,
        rss_timeline=timeline,
        stdout=stdout,
    )
