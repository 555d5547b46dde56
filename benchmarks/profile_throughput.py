"""Profile the running deployment's node under steady traffic with py-spy.

    pip install py-spy
    python benchmarks/profile_throughput.py --home DIR --rate 3000 --seconds 6

Drives one `msgctl bench` throughput step at RATE msgs/s (the node pinned to
CPU 0, clients on the others) while py-spy samples the node, then prints the
hottest functions (self time) and the project's and websockets' frames by
cumulative time, as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from msgctl.bench import runner
from msgctl.cli.bench import _target
from msgctl.home import Home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--rate", type=float, default=3000)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    target = _target(Home(args.home), None)
    out = Path(tempfile.mkdtemp()) / "profile.txt"
    rec = subprocess.Popen([spy, "record", "-p", str(target.pid), "-d", str(int(args.seconds)),
                            "-r", "200", "-f", "raw", "-o", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = runner._pin(target.pid, {0})
    try:
        step = runner.run_step(target, runner.Settings(warmup_seconds=0.5), args.rate, False,
                               args.seconds)
    finally:
        runner._unpin(target.pid, saved)
        rec.wait()
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        total += int(n)
        own[frames[-1]] += int(n)
        for frame in set(frames):
            cumulative[frame] += int(n)
    report = {
        "step": step.__dict__, "samples": total,
        "self": [(round(100 * v / total, 1), k) for k, v in own.most_common(args.top)],
        "cumulative": [(round(100 * v / total, 1), k) for k, v in cumulative.most_common(400)
                       if "runtime/" in k or "websockets/" in k][: args.top],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"step: {step}")
    print(f"{total} samples; self time:")
    for pct, frame in report["self"]:
        print(f"  {pct:5.1f}%  {frame}")
    print("cumulative (runtime/, websockets/):")
    for pct, frame in report["cumulative"]:
        print(f"  {pct:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
