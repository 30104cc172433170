"""Start a command from a small process and record its rusage: `launch.py RESULT -- ARGV...`.

Why not wait4 the command from the bench process directly: on exec, Linux keeps the
largest RSS the process had before (ru_maxrss counts the pre-exec memory, and a
vfork/posix_spawn child shares the parent's). A command started by the bench, which
holds numpy and buffers, would report the bench's RSS as its own peak. Started from
this script (run with `python -I -S`, a few MiB), the command's ru_maxrss is its own.

The command inherits stdin, stdout and stderr; this process closes its copies so that
the pipes end when the command ends. RESULT receives one JSON object: returncode,
wall_s, utime_s, stime_s, maxrss_kib, minflt (page faults), all from os.wait4 of the command alone.
Standard library only: it runs without site-packages.
"""

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: launch.py RESULT -- ARGV...", file=sys.stderr)
        return 2
    result, command = argv[1], argv[3:]
    start = time.perf_counter()
    try:
        pid = os.posix_spawnp(command[0], command, dict(os.environ))
    except OSError as exc:
        print(f"cannot start {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    os.close(0)
    os.close(1)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as out:
        json.dump(
            {
                "returncode": code,
                "wall_s": wall,
                "utime_s": usage.ru_utime,
                "stime_s": usage.ru_stime,
                "maxrss_kib": usage.ru_maxrss,
                "minflt": usage.ru_minflt,
            },
            out,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
