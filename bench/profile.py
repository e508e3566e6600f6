"""py-spy recordings of server processes while a scenario runs, and their top frames."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SAMPLES_PER_SECOND = 100
TOP_FRAMES = 12
# "function (path/module.py)" as py-spy writes frames with --nolineno.
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")
# Frames left out of the inclusive ranking: the event loop, threads, entry points.
PLUMBING = re.compile(
    r"\((asyncio/|selectors\.py|threading\.py|runners\.py)|^<module> |__main__\.py\)$"
)


@dataclass
class Recording:
    name: str
    pid: int
    path: Path
    seconds: float
    proc: subprocess.Popen


def py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise FileNotFoundError(
            "py-spy not found: install the bench extra (pip install -e '.[bench]')"
        )
    return found


def start(pids: dict[str, int], seconds: float, out_dir: Path, tag: str) -> list[Recording]:
    """Start one ``py-spy record`` per process; each stops by itself after ``seconds``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    recordings = []
    for name, pid in pids.items():
        path = out_dir / f"{tag}-{name}.txt"
        args = [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            str(SAMPLES_PER_SECOND),
            "--format",
            "raw",
            "--nolineno",
            # Only samples that hold the GIL: where the Python code spends CPU,
            # without threads that wait in select() or in gRPC's C core.
            "--gil",
            # Sampling without pausing the process costs it less time.
            "--nonblocking",
            "--output",
            str(path),
        ]
        log = open(out_dir / f"{tag}-{name}.log", "wb")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        recordings.append(Recording(name, pid, path, seconds, proc))
    return recordings


def finish(recordings: list[Recording], timeout: float = 60.0) -> dict[str, dict]:
    """Wait for each recording and return its summary, or the error if it failed."""
    summaries = {}
    for recording in recordings:
        try:
            code = recording.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            recording.proc.kill()
            recording.proc.wait(5)
            code = "timeout"
        if code != 0 or not recording.path.exists():
            summaries[recording.name] = {
                "error": f"py-spy exited with {code}; see {recording.path}.log"
            }
            continue
        summaries[recording.name] = summarize(recording.path, recording.seconds)
    return summaries


def frame_name(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    return f"{match['function']} ({match['file']})"


def summarize(path: Path, seconds: float) -> dict:
    """Count samples by innermost frame (self) and by every frame on the stack (inclusive)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(frame) for frame in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    expected = SAMPLES_PER_SECOND * seconds
    return {
        "file": path.name,
        "samples": samples,
        # Samples holding the GIL per sampling tick: an estimate of the share of
        # one core that the process's Python code used.
        "busy_share": samples / expected if expected else None,
        "self": [[frame, count / samples] for frame, count in own.most_common(TOP_FRAMES)]
        if samples
        else [],
        "inclusive": top_inclusive(inclusive, samples),
    }


def top_inclusive(inclusive: Counter[str], samples: int) -> list[list]:
    """Return the frames with the most samples under them, less the event loop's own frames.

    The frames of asyncio, threading and the program's entry point sit under
    nearly every sample, so they show nothing about where the time goes.
    """
    if not samples:
        return []
    ranked = [(frame, count / samples) for frame, count in inclusive.most_common()]
    return [[frame, share] for frame, share in ranked if not PLUMBING.search(frame)][:TOP_FRAMES]
