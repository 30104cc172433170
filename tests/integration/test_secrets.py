"""No secret on stderr, in the log (at every level, tracebacks included) or in a repr.

Every option that can carry one is set to a recognisable value: aws_access_key_id,
aws_secret_access_key, the user-info of endpoint and http_proxy, and the keys and
session token of the environment. Each failure below runs at every log_level.
"""

from __future__ import annotations

import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncplug.config import build_config
from asyncplug.errors import AccessDenied, ConfigError, StorageError
from asyncplug.redact import Redactor, mask_url, secret_values
from asyncplug.storage.credentials import static_keys
from bench.seaweed import SeaweedServer
from tests.integration.runner import make_plugin

TS = "20250101123456"
KEY_ID = "AKIDKEYIDVALUE0001"
SECRET = "secret-value/with+chars=1"
EP_USER, EP_PASSWORD = "endpoint-user", "endpoint-pass-2"
PROXY_USER, PROXY_PASSWORD = "proxy-user", "proxy-pass-3"
ENV_SECRET = "env-secret-value-4"
TOKEN = "session-token-value-5"
SECRETS = (KEY_ID, SECRET, EP_USER, EP_PASSWORD, PROXY_USER, PROXY_PASSWORD, ENV_SECRET, TOKEN)
LEVELS = ("debug", "info", "warning", "error")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def data_key(root: Path) -> str:
    return str(root / "seg0" / "backups" / TS[:8] / TS / f"gpbackup_0_{TS}")


def scenarios(seaweed: SeaweedServer, bucket: str) -> dict[str, tuple[dict[str, Any], str, int]]:
    """name -> (options, command, exit status)."""
    host = seaweed.endpoint.split("://")[1]
    keys = {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}
    base = {"bucket": bucket, "folder": "prod/cluster1", "encryption": "off", "max_retries": 0}
    return {
        # botocore's own message quotes the endpoint URL: it reaches the traceback
        "refused endpoint": (
            {
                **base,
                **keys,
                "endpoint": f"http://{EP_USER}:{EP_PASSWORD}@127.0.0.1:{closed_port()}",
            },
            "list_directory",
            StorageError.exit_code,
        ),
        "refused proxy": (
            {
                **base,
                **keys,
                "endpoint": seaweed.endpoint,
                "http_proxy": f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{closed_port()}",
            },
            "list_directory",
            StorageError.exit_code,
        ),
        "remove_duplicate_bucket": (
            {
                **base,
                **keys,
                "remove_duplicate_bucket": "on",
                "endpoint": f"http://{EP_USER}:{EP_PASSWORD}@{host}/not-the-bucket",
            },
            "list_directory",
            ConfigError.exit_code,
        ),
        # keys and token from the environment; user-info on a working endpoint
        "denied": (
            {**base, "endpoint": f"http://{EP_USER}:{EP_PASSWORD}@{host}"},
            "backup_data",
            AccessDenied.exit_code,
        ),
    }


@pytest.mark.parametrize("level", LEVELS)
def test_no_secret_on_stderr_or_in_the_log(
    seaweed: SeaweedServer,
    bucket: str,
    write_config: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    level: str,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.identity.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    logs = tmp_path / "logs"
    for name, (options, command, code) in scenarios(seaweed, bucket).items():
        plugin = make_plugin({**options, "log_level": level}, write_config, tmp_path)
        args = [data_key(tmp_path)] if command == "backup_data" else []
        proc = plugin(command, *args, stdin=b"some rows\n", check=False)
        err = proc.stderr.decode()
        assert proc.returncode == code, (name, err)
        assert err.startswith("asyncplug: ") and err.count("\n") == 1, (name, err)
        for secret in SECRETS:
            assert secret not in err, (name, secret, err)
        if name == "remove_duplicate_bucket":
            assert f"http://***@{seaweed.endpoint.split('://')[1]}/not-the-bucket" in err
    (log,) = logs.glob("asyncplug_*.log")
    text = log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert text.count("-[ERROR]:-") >= 4  # every failure was logged
    for secret in SECRETS:
        assert secret not in text, secret
    if level == "debug":  # the options in effect, masked
        assert "'aws_secret_access_key': '***'" in text and "'aws_access_key_id': '***'" in text
        assert "'http_proxy': 'http://***@127.0.0.1:" in text
        assert "Traceback" in text  # tracebacks were redacted, not left out


def test_an_existing_log_file_becomes_private(
    write_config: Callable[..., str], tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    from asyncplug.log import log_path

    old = log_path(str(logs))
    old.write_text("")
    old.chmod(0o644)
    plugin = make_plugin({"storage": "file", "path": str(tmp_path / "s"), "folder": "f"},
                         write_config, tmp_path)  # fmt: skip
    plugin("list_directory")
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


def test_no_secret_in_any_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    config = build_config(
        {
            "bucket": "b",
            "folder": "f",
            "endpoint": f"https://{EP_USER}:{EP_PASSWORD}@s3.example",
            "http_proxy": f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:3128",
            "aws_access_key_id": KEY_ID,
            "aws_secret_access_key": SECRET,
        }
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    env_credentials = static_keys(build_config({"bucket": "b", "folder": "f", "region": "r"}))
    assert env_credentials is not None and env_credentials.token == TOKEN
    texts = [repr(config), str(config.redacted()), repr(static_keys(config))]
    texts += [repr(env_credentials), str(env_credentials)]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, (secret, text)
    assert "https://***@s3.example" in repr(config)
    # every value the log masks: both keys, the token, each URL's user and password
    hidden = set(secret_values(config))
    assert {KEY_ID, SECRET, ENV_SECRET, TOKEN, EP_USER, EP_PASSWORD} <= hidden
    assert {PROXY_USER, PROXY_PASSWORD} <= hidden


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://u:p@host:9000/x", "http://***@host:9000/x"),
        ("proxy https://user@proxy:3128 failed", "proxy https://***@proxy:3128 failed"),
        ("http://u:p%40ss@h", "http://***@h"),
        ("http://u:p@ss@h/a b", "http://***@h/a b"),  # an unencoded @ in the password
        ("http://host/path", "http://host/path"),
    ],
)
def test_mask_url(text: str, masked: str) -> None:
    assert mask_url(text) == masked


def test_redactor_masks_values_anywhere() -> None:
    redact = Redactor([SECRET, "ab"])  # too short to mask safely: left alone
    assert redact(f"x {SECRET} y ab") == "x *** y ab"


@pytest.mark.parametrize("level", LEVELS)
def test_the_log_masks_foreign_messages_in_tracebacks(tmp_path: Path, level: str) -> None:
    """A library's message may quote a URL or a request: the formatter masks each line."""
    from asyncplug import log as logfile

    path = logfile.configure(str(tmp_path), level)
    assert path is not None
    logfile.hide([SECRET, TOKEN])
    try:
        leak = f"http://{EP_USER}:{EP_PASSWORD}@h/ token={TOKEN} key={SECRET}"
        try:
            raise ValueError(leak)
        except ValueError:
            for method in (logfile.log.debug, logfile.log.info, logfile.log.warning):
                method("seen %s", leak, exc_info=True)
            logfile.log.error("seen %s", leak, exc_info=True)
    finally:
        logfile.close()
    text = path.read_text()
    logged = {"debug": 4, "info": 3, "warning": 2, "error": 1}[level]
    assert text.count("ValueError: http://***@h/ token=*** key=***") == logged
    for secret in SECRETS:
        assert secret not in text
