"""Sample the consumer with py-spy while a scenario runs; summarise where its CPU goes.

`python -m bench --scenario cpu-single --profile` writes `profile-cpu-single.txt`
(collapsed stacks, for flame graph tools) and prints the functions that hold the most
samples, inclusive and self. Idle samples (threads waiting) are left out.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_IDLE = ("select (", "poll (", "epoll", "wait (", "_worker (", "consume (cimpl")


def start(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    command = [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250"]
    command += ["--output", str(out), "--nonblocking", "--threads"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise(path: Path, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or any(marker in frames[-1] for marker in _IDLE):
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} busy samples", "", "inclusive:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)
