"""Machine description, package versions, load, and a peak-RSS probe (Linux procfs)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import sys
from typing import Any

PACKAGES = (
    "adamp-optimizers",
    "torch",
    "keras",
    "tensorflow-cpu",
    "tensorflow",
    "jax",
    "numpy",
    "adamp",
    "timm",
    "pytorch_optimizer",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages (runnable processes), or None where unsupported."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def total_memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info(threads: int) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads": threads,
        "memory_gib": total_memory_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "loadavg_start": loadavg(),
    }


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakRss:
    """Transient resident-memory growth of a code region.

    ``start()`` resets the kernel's high-water mark (``/proc/self/clear_refs`` <- 5) and reads
    the current RSS; ``stop()`` returns VmHWM minus that RSS, in bytes. Memory the allocator
    kept from earlier steps and reuses is already resident, so it is not counted: this is the
    growth in touched pages, a lower bound on the temporaries. ``available`` is False where
    procfs does not allow the reset (then ``stop()`` returns None).
    """

    def __init__(self) -> None:
        self.available = self._reset() and _status_kib("VmHWM") is not None
        self._rss0 = 0

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def start(self) -> None:
        if self.available:
            self._reset()
            self._rss0 = _status_kib("VmRSS") or 0

    def stop(self) -> int | None:
        if not self.available:
            return None
        hwm = _status_kib("VmHWM") or 0
        return max(0, hwm - self._rss0) * 1024
