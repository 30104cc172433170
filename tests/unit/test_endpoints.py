"""Endpoints, addressing, region errors and TLS trust, checked against botocore itself."""

from __future__ import annotations

import dataclasses
import functools
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.exceptions as bce
import botocore.session
import pytest
from aiobotocore.httpsession import AIOHTTPSession
from botocore.config import Config as BotoConfig

from asyncplug.config import build_config
from asyncplug.errors import AccessDenied, ConfigError, StorageError
from asyncplug.storage import endpoints, http1, s3, tls
from asyncplug.storage.s3boto import _Backoff, _Conditions, client_config
from asyncplug.storage.s3common import endpoint_settings, status_error
from asyncplug.storage.s3lean import LeanS3
from asyncplug.storage.sigv4 import Credentials

REGIONS = [
    "us-east-1", "eu-west-1", "ap-southeast-5", "cn-north-1", "cn-northwest-1",
    "us-gov-west-1", "us-gov-east-1", "us-iso-east-1", "us-isob-east-1", "eu-isoe-west-1",
    "us-isof-south-1", "eusc-de-east-1", "aws-global", "mars-east-1",
]  # fmt: skip


@functools.cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()  # one loader: its data is read once


class Sent(Exception):
    """Raised from botocore's before-send: the request it would have sent, not sent."""


def botocore_request(region: str, options: dict[str, Any]) -> tuple[str, str]:
    """(URL, credential scope region) botocore would use for a HeadObject."""
    config = build_config({"bucket": "gp-backups", "folder": "f", "region": region, **options})
    url, use_ssl, style = endpoint_settings(config)
    client = _session().create_client(
        "s3",
        region_name=region,
        endpoint_url=url,
        use_ssl=use_ssl,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=BotoConfig(s3={"addressing_style": style}),
    )

    def send(request: Any, **_: Any) -> None:
        scope = request.headers["Authorization"].decode().split("Credential=")[1]
        raise Sent(request.url, scope.split("/")[2])

    client.meta.events.register("before-send", send)
    with pytest.raises(Sent) as sent:
        client.head_object(Bucket=config.bucket, Key="k")
    return sent.value.args[0], sent.value.args[1]


def lean_request(region: str, options: dict[str, Any]) -> tuple[str, str]:
    config = build_config({"bucket": "gp-backups", "folder": "f", "region": region, **options})

    async def fallback(*_: Any) -> list[bytes]:
        raise AssertionError

    lean = LeanS3(config, Credentials("AKIDEXAMPLE", "secret"), fallback)
    target, path = lean._target("k", "")
    scope = lean.signer.sign("HEAD", lean.netloc, path, "", {})["authorization"]
    region_signed = scope.split("Credential=")[1].split("/")[2]
    return f"{target.scheme}://{target.netloc}{target.path}", region_signed


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"addressing_style": "path"},
        {"bucket": "gp.backups"},
        {"bucket": "gp.backups", "encryption": "off"},
        {"encryption": "off"},
    ],
)
def test_aws_endpoints_resolve_like_botocore(region: str, options: dict[str, Any]) -> None:
    assert lean_request(region, options) == botocore_request(region, options)


@pytest.mark.parametrize(
    "options",
    [
        {"endpoint": "http://localhost:9000"},
        {"endpoint": "http://localhost:9000", "addressing_style": "virtual"},
        {"endpoint": "https://minio.local/base/", "addressing_style": "virtual"},
        {"endpoint": "https://minio.local", "addressing_style": "virtual", "bucket": "gp.backups"},
        {"endpoint": "http://minio.local", "addressing_style": "virtual", "bucket": "gp.backups"},
        {"endpoint": "https://gp-backups.minio.local", "remove_duplicate_bucket": "on"},
        {"endpoint": "https://minio.local/gp-backups", "remove_duplicate_bucket": "on"},
    ],
)
def test_custom_endpoints_address_like_botocore(options: dict[str, Any]) -> None:
    assert lean_request("eu-west-2", options) == botocore_request("eu-west-2", options)


def test_us_east_1_regional_endpoint_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_S3_US_EAST_1_REGIONAL_ENDPOINT", "regional")
    assert lean_request("us-east-1", {}) == botocore_request("us-east-1", {})
    assert endpoints.aws_host("us-east-1") == "s3.us-east-1.amazonaws.com"


def test_a_region_that_is_no_host_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a region name"):
        endpoints.aws_host("eu-west-1.evil.example/")
    config = build_config({"bucket": "b", "folder": "f", "region": "eu-west-1.evil.example"})
    with pytest.raises(ConfigError, match=r"option region: .* is not a region name"):
        endpoint_settings(config)  # both paths, before any request


def test_both_paths_back_off_alike() -> None:
    class Context:
        def __init__(self, attempt: int) -> None:
            self.attempt_number = attempt

    for attempt, cap in ((1, 0.25), (2, 0.5), (4, 2.0), (12, 20.0)):
        delays = [_Backoff().delay_amount(Context(attempt)) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays) and max(delays) > cap / 2


@pytest.mark.parametrize(
    ("bucket", "dots", "hostable"),
    [
        ("gp-backups", False, True),
        ("gp.backups", False, False),
        ("gp.backups", True, True),
        ("Gp-backups", False, False),
        ("gp_backups", False, False),
        ("gp-", False, False),
        ("ab", False, False),
        ("a" * 64, False, False),
        ("192.168.1.1", False, False),
    ],
)
def test_virtual_hostable(bucket: str, dots: bool, hostable: bool) -> None:
    assert endpoints.virtual_hostable(bucket, dots) is hostable


def test_endpoint_data_is_a_small_file_read_only_when_needed() -> None:
    """No region-only import cost: partitions.json is read when an AWS host is built."""
    script = (
        "import sys; from asyncplug.storage import s3, endpoints;"
        "assert endpoints._partitions.cache_info().currsize == 0;"
        "print(endpoints.aws_host('cn-north-1'))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "s3.cn-north-1.amazonaws.com.cn"


async def test_a_redirect_moves_the_lean_path_to_the_buckets_region() -> None:
    config = build_config({"bucket": "gp-backups", "folder": "f", "region": "us-east-1"})

    async def fallback(*_: Any) -> list[bytes]:
        raise AssertionError

    lean = LeanS3(config, Credentials("AKIDEXAMPLE", "secret"), fallback)
    assert lean.netloc == "gp-backups.s3.amazonaws.com"
    moved = http1.Response(301, {"x-amz-bucket-region": "cn-north-1"})
    assert await lean._redirect("PUT", moved, "PermanentRedirect", again=True) == (
        False,
        "cn-north-1",
    )  # once per request
    assert await lean._redirect("PUT", moved, "PermanentRedirect", again=False) == (
        True,
        "cn-north-1",
    )
    assert (lean.scheme, lean.netloc, lean.prefix) == (
        "https",
        "gp-backups.s3.cn-north-1.amazonaws.com.cn",
        "",
    )
    signed = lean.signer.sign("PUT", lean.netloc, "/k", "", {})["authorization"]
    assert "/cn-north-1/s3/aws4_request" in signed
    assert endpoints.learnt_region("gp-backups") == "cn-north-1"
    again = LeanS3(config, Credentials("AKIDEXAMPLE", "secret"), fallback)
    assert again.netloc == lean.netloc  # later storages of the process start there
    endpoints._learnt.clear()


# --- region errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "code", "region", "redirect"),
    [
        ("PUT", 301, "PermanentRedirect", "eu-west-2", True),
        ("GET", 307, "TemporaryRedirect", "eu-west-2", True),
        ("PUT", 400, "AuthorizationHeaderMalformed", "eu-west-2", True),
        ("PUT", 400, "AuthorizationHeaderMalformed", None, False),
        ("HEAD", 400, "400", "eu-west-2", True),
        ("GET", 400, "InvalidArgument", "eu-west-2", False),
        ("GET", 403, "AccessDenied", "eu-west-2", False),
    ],
)
def test_region_errors_are_those_botocore_redirects(
    method: str, status: int, code: str, region: str | None, redirect: bool
) -> None:
    assert endpoints.is_region_error(method, status, code, region) is redirect


def test_region_named_by_header_or_error_document() -> None:
    body = [
        memoryview(b"<Error><Code>AuthorizationHeaderMalformed</Code><Region>eu-west-3</Region>")
    ]
    assert endpoints.region_named({"x-amz-bucket-region": "eu-west-2"}, body) == "eu-west-2"
    assert endpoints.region_named({}, body) == "eu-west-3"
    assert endpoints.region_named({"x-amz-bucket-region": "a.b/c"}) is None


def test_region_error_messages_name_the_region() -> None:
    what = "put s3://b/k"
    moved = s3.translate(
        status_error(301, "PermanentRedirect", 0, "PutObject", {}, "eu-west-2"), what
    )
    assert type(moved) is ConfigError
    assert str(moved) == (
        f"{what}: the bucket is in region eu-west-2 (PermanentRedirect); set region: eu-west-2 "
        "(and an endpoint, if any, of that region)"
    )
    head = status_error(400, "400", 0, "HeadObject", {"x-amz-bucket-region": "eu-west-2"})
    assert "region eu-west-2 (400)" in str(s3.translate(head, what))
    unknown = s3.translate(status_error(301, "PermanentRedirect", 0), what)
    assert type(unknown) is ConfigError and "check region and endpoint" in str(unknown)
    other = s3.translate(
        status_error(400, "InvalidArgument", 0, headers={"x-amz-bucket-region": "x"}), what
    )
    assert type(other) is StorageError


def test_clock_skew_says_check_the_clock() -> None:
    error = s3.translate(status_error(403, "RequestTimeTooSkewed", 0), "put s3://b/k")
    assert type(error) is AccessDenied
    assert str(error) == (
        "put s3://b/k: the server refused the request time (RequestTimeTooSkewed); "
        "check the host clock (NTP)"
    )


# --- TLS trust --------------------------------------------------------------------------


def test_trust_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    aws_config = tmp_path / "config"
    aws_config.write_text(
        "[default]\nca_bundle = /etc/default-ca.pem\n[profile corp]\nca_bundle = ~/corp.pem\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    for name in ("AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    config = build_config({"bucket": "b", "folder": "f", "region": "eu-west-1"})
    assert tls.trust_for(config) == tls.Trust(
        "/etc/default-ca.pem", "ca_bundle of AWS profile default"
    )
    monkeypatch.setenv("AWS_PROFILE", "corp")
    assert tls.trust_for(config) == tls.Trust(
        str(Path("~/corp.pem").expanduser()), "ca_bundle of AWS profile corp"
    )
    monkeypatch.setenv("AWS_CA_BUNDLE", "/env/ca.pem")
    assert tls.trust_for(config) == tls.Trust("/env/ca.pem", "AWS_CA_BUNDLE")
    option = dataclasses.replace(config, ca_bundle="/opt/ca.pem")
    assert tls.trust_for(option) == tls.Trust("/opt/ca.pem", "ca_bundle option")
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    monkeypatch.delenv("AWS_CA_BUNDLE")
    assert tls.trust_for(config) == tls.Trust()
    assert tls.Trust().describe() == "the system trust store"
    assert tls.Trust("/opt/ca.pem", "ca_bundle option").describe() == (
        "the system trust store + /opt/ca.pem (ca_bundle option)"
    )


def test_unreadable_bundle_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"cannot load CA bundle .*missing\.pem \(ca_bundle option\)"
    ):
        tls.context(tls.Trust(str(tmp_path / "missing.pem"), "ca_bundle option"))
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="cannot load CA bundle"):
        tls.context(tls.Trust(str(empty), "AWS_CA_BUNDLE"))


def test_certificate_failures_are_found_inside_botocore_and_aiohttp_errors() -> None:
    failure = ssl.SSLCertVerificationError(1, "certificate verify failed")
    failure.verify_message = "self-signed certificate"
    lean = bce.SSLError(endpoint_url="https://localhost:8443/b/k", error=failure)
    assert tls.certificate_failure(lean) is failure
    import aiohttp

    key = aiohttp.client_reqrep.ConnectionKey("localhost", 8443, True, True, None, None, None)
    boto = bce.SSLError(
        endpoint_url="https://user:pw@localhost:8443/b/k?uploads",
        error=aiohttp.ClientConnectorCertificateError(key, failure),
    )
    trust = tls.Trust("/opt/ca.pem", "ca_bundle option")
    messages = {str(tls.certificate_error(e, "put s3://b/k", trust)) for e in (lean, boto)}
    assert messages == {
        "put s3://b/k: the TLS certificate of localhost:8443 is not trusted (self-signed "
        "certificate); trusted: the system trust store + /opt/ca.pem (ca_bundle option); "
        "set ca_bundle to the CA that signed it"
    }
    other = bce.SSLError(endpoint_url="https://x", error=ssl.SSLError(1, "EOF"))
    assert tls.certificate_error(other, "w", trust) is None


async def test_botocore_does_not_retry_certificate_failures() -> None:
    failure = ssl.SSLCertVerificationError(1, "certificate verify failed")
    conditions = _Conditions(max_attempts=9)

    class Context:
        attempt_number = 1
        http_response = None
        parsed_response = None
        operation_model = None

        def __init__(self, exc: BaseException) -> None:
            self.caught_exception = exc
            self.request_context: dict[str, Any] = {}

        def get_error_code(self) -> None:
            return None

    cert = bce.SSLError(endpoint_url="https://x", error=failure)
    reset = bce.ConnectionClosedError(endpoint_url="https://x")
    assert await conditions.is_retryable(Context(cert)) is False
    assert await conditions.is_retryable(Context(reset)) is True


def test_aiobotocore_still_builds_its_context_where_we_replace_it(tmp_path: Path) -> None:
    """TrustingSession overrides AIOHTTPSession._build_verify_context (an aiobotocore
    internal): if aiobotocore renames it, both paths would silently trust differently."""
    assert callable(getattr(AIOHTTPSession, "_build_verify_context", None))
    config = build_config({"bucket": "b", "folder": "f", "region": "eu-west-1"})
    session_cls = client_config(config, tls.Trust()).http_session_cls
    session = session_cls(verify=True)
    context = session._build_verify_context()
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert session_cls(verify=False)._build_verify_context().verify_mode == ssl.CERT_NONE
