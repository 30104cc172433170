"""One behaviour whichever transport: the same scenarios on the lean path and on
aiobotocore, against our own S3 (fake_s3.py), with the same exit code and message.

The executable takes aiobotocore for every call when a proxy is configured, so the
"boto" runs point http_proxy at the fake server, which also answers as a forward
proxy. In-process scenarios force aiobotocore by dropping the lean path.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import crc32c
import pytest

from asyncplug.config import build_config
from asyncplug.errors import PluginError
from asyncplug.storage import endpoints
from asyncplug.storage.s3 import S3Storage
from tests.integration.fake_s3 import FakeS3, Fault
from tests.integration.runner import Plugin, make_plugin
from tests.integration.test_s3_lean import self_signed

BUCKET = "gp-backups"
LOCAL = "/data/gpseg0/backups/20250101/20250101123456/gpbackup_0_20250101123456"
KEY = "prod/cluster1/backups/20250101/20250101123456/gpbackup_0_20250101123456"
DATA = bytes(range(256)) * 40
TRANSPORTS = ("lean", "boto")


@pytest.fixture(autouse=True)
def forget_regions() -> Iterator[None]:
    """Regions learnt from redirects last for the process: here, for one test."""
    yield
    endpoints._learnt.clear()


@pytest.fixture
def fake() -> Iterator[FakeS3]:
    with FakeS3(BUCKET) as server:
        yield server


def plugin_for(
    fake: FakeS3,
    transport: str,
    write_config: Callable[..., str],
    tmp_path: Path,
    **extra: Any,
) -> Plugin:
    options = fake.options(region="us-east-1", max_retries=2, **extra)
    if transport == "boto":
        options["http_proxy"] = fake.endpoint  # every call through aiobotocore
    return make_plugin(options, write_config, tmp_path, f"{transport}.yaml")


def outcome(proc: subprocess.CompletedProcess[bytes]) -> tuple[int, str]:
    """(exit code, stderr), stderr being one `asyncplug: ` line when the run failed."""
    err = proc.stderr.decode()
    if proc.returncode:
        assert err.startswith("asyncplug: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
    return proc.returncode, err


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("answer", ["301", "307", "400", "301 without region"])
def test_region_redirect_is_followed_once_per_process(
    fake: FakeS3,
    transport: str,
    answer: str,
    write_config: Callable[..., str],
    tmp_path: Path,
) -> None:
    """The bucket is in eu-west-2, the config says us-east-1: the first request of each
    process is answered with S3's region error (naming the region, or not: then a HEAD of
    the bucket asks), and sent again signed for eu-west-2; every later request of the
    process goes there directly."""
    fake.region, fake.wrong_region = "eu-west-2", answer.split()[0]
    fake.name_region = "without" not in answer
    asked = [] if fake.name_region else [("HEAD", f"/{BUCKET}")]
    plugin = plugin_for(fake, transport, write_config, tmp_path)
    plugin("backup_data", LOCAL, stdin=DATA)
    wrong = [(s.method, s.path) for s in fake.seen if s.region == "us-east-1"]
    assert wrong == [("PUT", f"/{BUCKET}/{KEY}"), *asked]
    assert fake.seen[len(wrong)].region == "eu-west-2"
    fake.seen.clear()
    assert plugin("restore_data", LOCAL).stdout == DATA
    wrong = [(s.method, s.path) for s in fake.seen if s.region == "us-east-1"]
    assert wrong == [("HEAD", f"/{BUCKET}/{KEY}"), *asked]
    assert fake.objects[KEY][0] == DATA


SCENARIOS: dict[str, tuple[dict[str, Any], list[Fault], int, str]] = {
    # name: (FakeS3 settings, faults, exit code, message after "asyncplug: <what>: ")
    "redirected again": (
        {"region": "eu-west-2", "always_redirect": True},
        [],
        3,
        "the bucket is in region eu-west-2 (PermanentRedirect); set region: eu-west-2 "
        "(and an endpoint, if any, of that region)",
    ),
    "clock skew": (
        {},
        [Fault("*", 403, "RequestTimeTooSkewed", times=99)],
        7,
        "the server refused the request time (RequestTimeTooSkewed); check the host clock (NTP)",
    ),
    "throttled for ever": (
        {},
        [Fault("PUT", 503, "SlowDown", times=99)],
        5,
        "the server kept failing (SlowDown) after 3 attempts",
    ),
    "too many requests for ever": (
        {},
        [Fault("PUT", 429, "TooManyRequests", times=99)],
        5,
        "the server kept failing (TooManyRequests) after 3 attempts",
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_failures_are_reported_alike(
    scenario: str, write_config: Callable[..., str], tmp_path: Path
) -> None:
    settings, faults, code, message = SCENARIOS[scenario]
    results: dict[str, tuple[int, str, list[str]]] = {}
    for transport in TRANSPORTS:
        with FakeS3(BUCKET, **settings) as fake:
            fake.faults = [Fault(f.method, f.status, f.code, f.times) for f in faults]
            plugin = plugin_for(fake, transport, write_config, tmp_path / transport)
            proc = plugin("backup_data", LOCAL, stdin=DATA, check=False)
            puts = [s.region for s in fake.requests("PUT")]
            results[transport] = (*outcome(proc), puts)
    assert results["lean"][:2] == results["boto"][:2]
    assert results["lean"][:2] == (code, f"asyncplug: put s3://{BUCKET}/{KEY}: {message}\n")
    # max_retries=2; a redirect is followed once; the rest is not retried
    attempts = 3 if scenario.endswith("for ever") else 2 if scenario == "redirected again" else 1
    assert len(results["lean"][2]) == len(results["boto"][2]) == attempts


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (429, "TooManyRequests")])
def test_throttling_is_ridden_out(
    fake: FakeS3,
    transport: str,
    status: int,
    code: str,
    write_config: Callable[..., str],
    tmp_path: Path,
) -> None:
    fake.faults = [Fault("PUT", status, code, times=2), Fault("GET", status, code, times=2)]
    plugin = plugin_for(fake, transport, write_config, tmp_path)
    plugin("backup_data", LOCAL, stdin=DATA)
    puts = [s for s in fake.requests("PUT") if not s.path.endswith(".asyncplug-idx")]
    assert len(puts) == 3  # 2 refused, then stored; its block index once more
    assert plugin("restore_data", LOCAL).stdout == DATA
    assert len(fake.requests("GET")) == 4  # 2 refused, the block index and the data
    assert not fake.faults


# --- in process: virtual-hosted requests, TLS --------------------------------------------


@pytest.fixture
def localhost_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """`<bucket>.localhost` resolves to 127.0.0.1 (this machine's resolver does not do it),
    for virtual-hosted requests to the fake server. Any other name is refused."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".localhost"):
            return real("127.0.0.1", *args, **kwargs)
        if host not in ("localhost", "127.0.0.1"):
            raise socket.gaierror(socket.EAI_NONAME, "only loopback in tests")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def storage(options: dict[str, Any], transport: str) -> S3Storage:
    store = S3Storage(build_config(options))
    if transport == "boto":
        store.lean = None  # every call through aiobotocore
    else:
        assert store.lean is not None
    return store


async def round_trip(store: S3Storage) -> None:
    async with store:
        await store.put(KEY, DATA, crc32c.crc32c(DATA), {"asyncplug-format": "raw"})
        upload = await store.start_upload(KEY + ".multi")
        await upload.put_part(1, 0, DATA, crc32c.crc32c(DATA))
        await upload.complete()
        info = await store.stat(KEY)
        assert (info.size, info.metadata) == (len(DATA), {"asyncplug-format": "raw"})
        assert b"".join(await store.get_range(KEY + ".multi", 5, 700)) == DATA[5:700]
        listed = [i.key async for i in store.list("prod/")]
        assert listed == [KEY, KEY + ".multi"]
        assert await store.delete([KEY]) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("style", ["virtual", "path", "auto"])
async def test_addressing_style(
    fake: FakeS3, transport: str, style: str, localhost_names: None
) -> None:
    """Virtual-hosted requests carry the bucket in the Host header, signed as such (the
    fake server checks every signature); path style and auto (for an endpoint) in the path."""
    endpoint = f"http://localhost:{fake.port}"
    options = fake.options(endpoint=endpoint, addressing_style=style)
    if transport == "boto":
        options["http_proxy"] = fake.endpoint
    await round_trip(storage(options, transport))
    virtual = style == "virtual"
    host = f"{BUCKET}.localhost:{fake.port}" if virtual else f"localhost:{fake.port}"
    assert {(s.host, s.virtual) for s in fake.seen} == {(host, virtual)}
    assert len(fake.seen) >= 8


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_ranged_get_is_redirected_too(fake: FakeS3, transport: str) -> None:
    fake.region = "eu-west-2"
    fake.objects[KEY] = (DATA, {})
    options = fake.options(region="us-east-1")
    if transport == "boto":
        options["http_proxy"] = fake.endpoint
    async with storage(options, transport) as store:
        assert b"".join(await store.get_range(KEY, 3, 900)) == DATA[3:900]
        assert b"".join(await store.get_range(KEY, 0, 9)) == DATA[:9]
    assert [(s.method, s.region) for s in fake.seen] == [
        ("GET", "us-east-1"),
        ("GET", "eu-west-2"),
        ("GET", "eu-west-2"),
    ]


@pytest.fixture
def tls_fake(tmp_path: Path) -> Iterator[tuple[FakeS3, Path]]:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    with FakeS3(BUCKET, tls=server_tls) as server:
        yield server, cert


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tls_trust_is_the_same_on_both_paths(
    tls_fake: tuple[FakeS3, Path],
    transport: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, cert = tls_fake
    for name in ("AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-such-config"))
    options = fake.options(max_retries=3)
    with pytest.raises(PluginError) as refused:
        async with storage(options, transport) as store:
            await store.put(KEY, DATA, crc32c.crc32c(DATA))
    assert refused.value.exit_code == 5
    assert str(refused.value) == (
        f"put s3://{BUCKET}/{KEY}: the TLS certificate of localhost:{fake.port} is not trusted "
        "(self-signed certificate); trusted: the system trust store; set ca_bundle to the CA "
        "that signed it"
    )
    assert fake.handshakes == 1  # not retried
    for trusted in (
        {"ca_bundle": str(cert)},
        {"ca_bundle": "", "env": str(cert)},
    ):
        if "env" in trusted:
            monkeypatch.setenv("AWS_CA_BUNDLE", trusted["env"])
            opts = options
        else:
            opts = {**options, **trusted}
        fake.seen.clear()
        fake.objects.clear()
        await round_trip(storage(opts, transport))
        assert len(fake.seen) >= 8


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_bad_ca_bundle_is_a_config_error(
    tls_fake: tuple[FakeS3, Path], transport: str, tmp_path: Path
) -> None:
    fake, _ = tls_fake
    missing = tmp_path / "missing.pem"
    with pytest.raises(PluginError) as refused:
        async with storage(fake.options(ca_bundle=str(missing)), transport) as store:
            await store.stat(KEY)
    assert refused.value.exit_code == 3
    assert str(refused.value) == (
        f"cannot load CA bundle {missing} (ca_bundle option): No such file or directory"
    )
    assert fake.handshakes == 0


def test_profile_ca_bundle_serves_setup_and_data_alike(
    tls_fake: tuple[FakeS3, Path],
    write_config: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ca_bundle in ~/.aws/config: setup and list_directory (aiobotocore) and backup_data
    and restore_data (lean path) all trust it; without it they all fail the same way."""
    fake, cert = tls_fake
    for name in ("AWS_CA_BUNDLE", "AWS_CONFIG_FILE", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    plugin = make_plugin(fake.options(max_retries=2), write_config, tmp_path)
    aws = plugin.home / ".aws"
    aws.mkdir(parents=True)
    backup_dir = str(tmp_path / "backups" / "20250101" / "20250101123456")
    setup = ("setup_plugin_for_backup", backup_dir, "coordinator", "-1")
    failed = [
        outcome(plugin(*setup, check=False)),
        outcome(plugin("backup_data", LOCAL, check=False)),
    ]
    assert [code for code, _ in failed] == [5, 5]
    tails = {err.split(": ", 2)[2] for _, err in failed}
    assert tails == {
        f"the TLS certificate of localhost:{fake.port} is not trusted (self-signed certificate); "
        "trusted: the system trust store; set ca_bundle to the CA that signed it\n"
    }
    (aws / "config").write_text(f"[default]\nregion = us-east-1\nca_bundle = {cert}\n")
    plugin(*setup)
    plugin("backup_data", LOCAL, stdin=DATA)
    assert KEY in plugin("list_directory").stdout.decode()
    assert plugin("restore_data", LOCAL).stdout == DATA
