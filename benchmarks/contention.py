"""Neighbours on a shared machine: measure how much CPU they took, and redo disturbed runs.

A busy neighbour slows both sides of a comparison, but rarely equally, and with two cores and
two torch threads per side one stolen core can stall a step many times over.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from timing import StreamTiming

__all__ = ["ForeignCpu", "PairRunner", "Run"]

# A side under test: prompts and max_tokens in, one timing per prompt out.
Run = Callable[[list[list[int]], int], list[StreamTiming]]

_PROC_STAT = Path("/proc/stat")


class ForeignCpu:
    """The share of the machine's CPU time that other processes (or the host) took during a block.

    Reads 0 where /proc/stat does not exist. `own_pids` are other processes whose CPU time is
    not foreign, their children's included: a server under test (and the engine processes it
    started, as vLLM's), say.
    """

    def __init__(self, own_pids: Sequence[int] = ()) -> None:
        self.share = 0.0
        self.own_pids = tuple(own_pids)
        self._start = (0.0, 0.0, 0.0)

    def __enter__(self) -> ForeignCpu:
        self._start = _cpu_ticks(self.own_pids)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        end = _cpu_ticks(self.own_pids)
        busy, total, own = (e - s for e, s in zip(end, self._start, strict=True))
        self.share = max(0.0, (busy - own) / total) if total > 0 else 0.0


def _cpu_ticks(own_pids: Sequence[int]) -> tuple[float, float, float]:
    # -> busy and total clock ticks of the whole machine, and the busy ticks of this process
    # and of own_pids
    if not _PROC_STAT.is_file():
        return 0.0, 0.0, 0.0
    cpu = _PROC_STAT.read_text().split("\n", 1)[0].split()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in cpu[1:9])
    busy = user + nice + system + irq + softirq + steal
    times = os.times()
    own = (times.user + times.system) * os.sysconf("SC_CLK_TCK")
    own += sum(_ticks(fields) for fields in _process_tree(own_pids))
    return busy, busy + idle + iowait, own


def _process_tree(pids: Sequence[int]) -> list[list[str]]:
    # The /proc stat fields of the live processes among `pids` and their descendants.
    processes = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended meanwhile
                continue
            # Fields after the parenthesized command name, from field 3 (state) on.
            processes[int(entry.name)] = stat.rsplit(")", 1)[1].split()
    tree = set(pids) & processes.keys()
    grown = True
    while grown:
        children = {pid for pid, fields in processes.items() if int(fields[1]) in tree}
        grown = not children <= tree
        tree |= children
    return [processes[pid] for pid in tree]


def _ticks(fields: list[str]) -> int:
    # A process's user + system clock ticks, all its threads included: fields 14 and 15.
    return int(fields[11]) + int(fields[12])


class PairRunner:
    """Runs both sides on the same prompts, again when other processes took the CPU meanwhile."""

    def __init__(self, *, threshold: float, retries: int, log: Callable[[str], None]) -> None:
        # Most foreign CPU share a kept pair may have seen.
        self.threshold = threshold
        # Most redos of one pair; the last try is kept whatever it saw.
        self.retries = retries
        self._log = log
        # Pairs run again for contention.
        self.redone = 0
        # The most foreign CPU share seen during a kept pair.
        self.worst_kept = 0.0

    def run_pair(
        self, sides: list[tuple[str, Run]], prompts: list[list[int]], max_tokens: int
    ) -> dict[str, list[StreamTiming]]:
        for attempt in range(self.retries + 1):
            results: dict[str, list[StreamTiming]] = {}
            foreign = 0.0
            for name, run in sides:
                with ForeignCpu() as cpu:
                    results[name] = run(prompts, max_tokens)
                foreign = max(foreign, cpu.share)
            if foreign <= self.threshold or attempt == self.retries:
                break
            self.redone += 1
            self._log(f"  other processes took {foreign:.0%} of the CPU; running the pair again")
        self.worst_kept = max(self.worst_kept, foreign)
        return results
