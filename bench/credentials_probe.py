"""Credentials probe: CPU of one small backup_data with static keys and with container
credentials (from the credential cache, and resolved by botocore in the process).

Usage (needs the test extras: moto):
    .venv/bin/python -m bench.credentials_probe [--repeat 20] [--size 10000]

Starts moto's server on loopback with signatures checked and a local container-
credentials endpoint handing out its STS credentials (tests/aws_support.py), then
runs `asyncplug backup_data` of --size random bytes --repeat times for each of:
- static: the IAM user's keys in the config;
- container: AWS_CONTAINER_CREDENTIALS_FULL_URI, credential_cache on (the default:
  every run after the first takes the cached credentials);
- container-uncached: the same with credential_cache off (what the first process of
  a host pays: botocore's chain imported and asked).
Runs are interleaved; prints the median, min and max CPU (user + system, rusage of
the child) in milliseconds, and how often the endpoint was asked.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.aws_support import CredentialServer, MotoServer

BUCKET = "credentials-probe"
KEY = "/backups/20250101/20250101123456/gpbackup_{}_20250101123456"


def child_cpu_ms(argv: list[str], data: bytes, env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, input=data, env=env, check=True, capture_output=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return 1000 * (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--plugin", default=str(Path(sys.executable).parent / "asyncplug"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="asyncplug-probe-") as tmp:
        work = Path(tmp)
        moto = MotoServer().start(work / "moto.log")
        endpoint = CredentialServer(moto).start()
        try:
            moto.create_bucket(BUCKET)
            options = {**moto.plugin_options(BUCKET), "log_dir": str(work / "log")}
            chain = {k: v for k, v in options.items() if not k.startswith("aws_")}

            def config(name: str, values: dict[str, Any]) -> str:
                path = work / name
                path.write_text(yaml.safe_dump({"executablepath": "x", "options": values}))
                return str(path)

            base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            base.pop("XDG_RUNTIME_DIR", None)
            base.update(
                HOME=str(work),
                AWS_CONFIG_FILE=str(work / "none"),
                AWS_SHARED_CREDENTIALS_FILE=str(work / "none"),
                AWS_EC2_METADATA_DISABLED="true",
            )
            container = {**base, "AWS_CONTAINER_CREDENTIALS_FULL_URI": endpoint.url + "/container"}
            cases = {
                "static": (config("static.yaml", options), base),
                "container": (config("chain.yaml", chain), container),
                "container-uncached": (
                    config("uncached.yaml", {**chain, "credential_cache": "off"}),
                    container,
                ),
            }
            data = os.urandom(args.size)
            cpu: dict[str, list[float]] = {name: [] for name in cases}
            for number in range(args.repeat + 1):  # the first round warms up (and the cache)
                for name, (path, env) in cases.items():
                    argv = [args.plugin, "backup_data", path, KEY.format(number)]
                    spent = child_cpu_ms(argv, data, env)
                    if number:
                        cpu[name].append(spent)
            for name, values in cpu.items():
                print(
                    f"{name:20s} median {statistics.median(values):6.1f} ms  "
                    f"min {min(values):6.1f}  max {max(values):6.1f}  (n={len(values)})"
                )
            print(f"container endpoint asked {endpoint.hits['container']} times")
        finally:
            endpoint.stop()
            moto.stop()


if __name__ == "__main__":
    main()
