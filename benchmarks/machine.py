"""What the report says about the machine a benchmark ran on."""

from __future__ import annotations

import platform
import shlex
import sys
from pathlib import Path

__all__ = ["cpu_model", "metric_report"]


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def metric_report(setting: str, rows: list[tuple[str, str]]) -> str:
    """The command that ran, the machine and `setting`, then a two-column markdown table."""
    command = shlex.join(["python", *sys.argv])
    return "\n".join(
        [
            f"Command: `{command}`",
            f"Machine: {cpu_model()}; {setting}",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in rows),
        ]
    )
