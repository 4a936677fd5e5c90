"""Thread defaults: how many compute threads this process should use, and how idle OpenMP workers wait.

Contract: `default_threads()` counts the CPUs this process may run on (affinity, cgroup CPU quota, physical
cores), never the machine's; `threads_for_load()`, what a model gets by default, lowers that to the CPUs other
processes leave free at the time (sampled for 0.1 s). `configure_wait_policy()` runs before the C++ core is first imported and gives
OpenMP workers a bounded spin (then sleep) unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT; see
docs/ARCHITECTURE.md (threading). libgomp reads these at load, so an OpenMP runtime loaded earlier by another
library (torch imported first) keeps its own settings; `wait_policy()` reports which one applies.
"""

from __future__ import annotations

import math
import os
import time

# Spins (pause instructions, ~25 ns each on a Zen 4 core) a worker waits for the next parallel region before it
# sleeps on a futex. libgomp's default, 300000, is several milliseconds on current x86 cores: longer than a whole decode step of a small model,
# so on a machine with other work a waiting worker takes a core from the thread it waits for (see bench/RESULTS.md,
# "Threads under load"). This value covers the gaps inside a forward pass (an idle machine keeps its speed) and
# sleeps across the gap between tokens.
SPIN_COUNT = 2000
_USER_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_state: dict[str, str] = {}


def configure_wait_policy() -> None:
    """Set GOMP_SPINCOUNT for this process before libgomp loads, unless the user chose a wait policy."""
    if _state:
        return
    if any(v in os.environ for v in _USER_VARS):
        _state["policy"] = "user: " + ", ".join(f"{v}={os.environ[v]}" for v in _USER_VARS if v in os.environ)
    elif _libgomp_loaded():
        _state["policy"] = "libgomp was loaded before llama32_native (e.g. by torch): its own wait settings apply"
    else:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
        _state["policy"] = f"bounded spin: GOMP_SPINCOUNT={SPIN_COUNT}, then sleep"


def wait_policy() -> str:
    """How OpenMP workers of this process wait between parallel regions (for system_info)."""
    return _state.get("policy", "OpenMP runtime defaults")


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp" in line for line in f)
    except OSError:  # not Linux: no libgomp (macOS uses LLVM's libomp, which has its own defaults)
        return False


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (v2 cpu.max or v1 cfs quota), None when unlimited."""
    for rel in _cgroup_dirs():
        quota = _read_quota(os.path.join(root, rel.lstrip("/")), os.path.join(root, "cpu", rel.lstrip("/")))
        if quota is not None:
            return quota
    return None


def _cgroup_dirs() -> list[str]:
    """This process's cgroup paths (v2 unified and v1 cpu controller), then the root."""
    dirs = []
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "" or "cpu" in controllers.split(","):
                    dirs.append(path)
    except (OSError, ValueError):
        pass
    return dirs + ["/"]


def _read_quota(v2_dir: str, v1_dir: str) -> float | None:
    try:
        with open(os.path.join(v2_dir, "cpu.max")) as f:
            quota, period = (f.read().split() + ["100000"])[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(v1_dir, "cpu.cfs_quota_us")) as f:
            quota_us = int(f.read())
        with open(os.path.join(v1_dir, "cpu.cfs_period_us")) as f:
            period_us = int(f.read())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def other_cpu_load(seconds: float = 0.1) -> float | None:
    """CPUs' worth of work other processes did over a short window on the CPUs this process may use (/proc/stat's
    per-CPU lines, less this process's own CPU time), None if unknown."""
    mine = {f"cpu{i}" for i in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity") else set()

    def sample() -> tuple[float, float]:
        busy = 0.0
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name in mine:
                    v = [float(x) for x in values[:8]]
                    busy += sum(v) - v[3] - v[4]  # user..steal, less idle and iowait
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system

    try:
        busy0, own0 = sample()
        t0 = time.perf_counter()
        time.sleep(seconds)
        busy1, own1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if not mine:
        return None
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / (time.perf_counter() - t0)


def threads_for_load(n: int | None = None, others: float | None = None) -> int:
    """n (default_threads()) lowered to the CPUs other processes leave free now: one thread per free CPU.

    On a machine where other work keeps CPUs busy, a thread that shares a core with it stalls the others at
    every barrier of a forward pass; fewer threads then decode faster (bench/RESULTS.md, "Threads under load").
    """
    n = default_threads() if n is None else n
    others = other_cpu_load() if others is None else others
    if others is None or n <= 1:
        return n
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    free = cpus - others
    return max(1, min(n, math.floor(free + 0.5)))


def default_threads() -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota and by physical cores.

    Hyper-threads do not help a bandwidth-bound decode, and a thread per CPU the quota does not give
    would only be throttled.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        n = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    try:
        import psutil  # optional
    except ImportError:
        return max(1, n)
    phys = psutil.cpu_count(logical=False)
    return max(1, min(n, phys) if phys else n)


configure_wait_policy()  # at import: the package imports this module before its C++ core
