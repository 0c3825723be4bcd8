"""Profile sipmesh under sipp load with py-spy (the hot-path work of issue 13).

    python -m bench.lib.profile --scenario register_auth --rate 150 --seconds 8

Starts an embedded sipmesh (edge,router,registrar) on free ports with a small
provisioned pool, drives it with the benchmark scenario at a fixed rate, records
``py-spy record --format raw`` for the given seconds, and prints the functions with
the largest inclusive and self share of samples (line numbers folded). py-spy must
be installed (``pip install py-spy``); it is a development tool, not a dependency.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.lib import systems
from bench.lib.sipp import sipp_cmd

DOMAIN = "bench.test"
PASSWORD = "benchpw"


def summarize(raw: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    out = [f"samples: {total}", "--- inclusive"]
    out += [f"{100 * n / total:5.1f}% {f[:140]}" for f, n in incl.most_common(top)]
    out += ["--- self"]
    out += [f"{100 * n / total:5.1f}% {f[:140]}" for f, n in own.most_common(top // 2)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scenario", default="register_auth", choices=["register", "register_auth", "options"]
    )
    parser.add_argument("--rate", type=float, default=150)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--svg", type=Path, default=None, help="also write a flame graph")
    parser.add_argument(
        "--native", action="store_true", help="include C frames (garbage collector, uvloop)"
    )
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    auth = args.scenario != "register"
    with tempfile.TemporaryDirectory(prefix="sipmesh-profile-") as tmp:
        work = Path(tmp)
        names = systems.users(2000)
        db_url = f"sqlite:///{work / 'p.sqlite'}"
        systems.provision_sipmesh(
            db_url, systems.write_bulk_file(work / "u.txt", names, DOMAIN, PASSWORD)
        )
        inf = work / "u.csv"
        rows = [f"{n};{DOMAIN};[authentication username={n} password={PASSWORD}]" for n in names]
        inf.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
        system = systems.start_embedded(work / "s", db_url, DOMAIN, auth)
        calls = int(args.rate * (args.seconds + 3))
        load = subprocess.Popen(
            sipp_cmd(
                system.remote,
                f"{args.scenario}.xml",
                workdir=work,
                rate=args.rate,
                calls=calls,
                inf=inf,
            ),
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)
            raw = work / "profile.txt"
            cmd = [pyspy, "record", "--pid", str(system.procs[0].pid), "-d", str(int(args.seconds))]
            subprocess.run(
                # --native pauses the process to unwind C stacks (py-spy refuses
                # it with --nonblocking): a little slower, same shares.
                [*cmd, "-r", "250", "-f", "raw", "-o", str(raw)]
                + (["--native"] if args.native else ["--nonblocking"]),
                check=True,
                capture_output=True,
                timeout=args.seconds + 60,
            )
            print(summarize(raw, args.top))
            if args.svg is not None:
                shutil.copy(raw, args.svg.with_suffix(".txt"))
        finally:
            load.kill()
            load.wait(5)
            system.stop()


if __name__ == "__main__":
    main()
