"""Resident-memory probes shared by the memory benchmarks (Linux: /proc and getrusage).

Peak memory only grows within a process, so each measurement runs in a fresh subprocess and
reports ``max_rss_mb() − current_rss_mb()`` taken before the work.
"""

from __future__ import annotations

import resource
from pathlib import Path


def current_rss_mb() -> float:
    """Resident set size of this process now, MB (from /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
