"""sigv4 against botocore's S3SigV4Auth (same request, same clock) and AWS's published example.

botocore reads the clock inside add_auth through botocore.auth.get_current_datetime, so
the reference signer runs with that name patched; it signs every header of the request
except a blacklist (user-agent, expect, ...), so its request gets exactly our headers
plus Host. Payload signing is switched off through the client config, as our S3 client
does, unless a case carries a body, whose SHA-256 botocore then computes itself.
"""

from __future__ import annotations

import datetime
import hashlib
import subprocess
import sys
from collections.abc import Mapping
from unittest import mock

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from botocore.utils import percent_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncplug.storage.sigv4 import (
    UNSIGNED_PAYLOAD,
    Credentials,
    Signer,
    canonical_query,
    quote_path,
)

REGION = "us-east-1"
NOW = 1_700_000_000.25  # 2023-11-14T22:13:20Z
CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
TOKEN_CREDS = Credentials("ASIAEXAMPLE", "se/cr+et=", "FwoGZXIvYXdzE//token+with/odd=chars")


def botocore_headers(
    method: str,
    host: str,
    raw_path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    creds: Credentials,
    now: float,
    body: bytes | None = None,
    region: str = REGION,
) -> dict[str, str]:
    """The x-amz-* and authorization headers botocore adds to this request at `now`."""
    # botocore's REST serializer encodes the greedy {Key+} label this way.
    url = f"https://{host}{percent_encode(raw_path, safe='/~')}"
    request = AWSRequest(
        method=method, url=url, headers={"Host": host, **headers}, params=dict(params), data=body
    )
    signing = body is not None
    request.context["client_config"] = Config(s3={"payload_signing_enabled": signing})
    auth = S3SigV4Auth(
        BotoCredentials(creds.access_key, creds.secret_key, creds.token), "s3", region
    )
    clock = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=clock):
        auth.add_auth(request)
    names = ["Authorization", "X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token"]
    return {name.lower(): request.headers[name] for name in names if name in request.headers}


def our_headers(
    method: str,
    host: str,
    raw_path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    creds: Credentials,
    now: float,
    region: str = REGION,
) -> dict[str, str]:
    """Our added headers merged with the given x-amz-content-sha256, as sent on the wire."""
    signer = Signer(region, lambda: creds)
    added = signer.sign(method, host, quote_path(raw_path), canonical_query(params), headers, now)
    sent = {name: value for name, value in headers.items() if name == "x-amz-content-sha256"}
    assert not sent.keys() & added.keys()  # never sent twice
    return {**sent, **added}


def test_get_object_with_range_matches_aws_documentation() -> None:
    # S3 API Reference, "Signature Calculations for the Authorization Header: Transferring
    # Payload in a Single Chunk", Example: GET Object. The documentation writes the
    # header without spaces after the commas; botocore (and we) put one, S3 accepts both.
    empty_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    signer = Signer(
        "us-east-1",
        lambda: Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    )
    now = datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc).timestamp()
    headers = {"range": "bytes=0-9", "x-amz-content-sha256": empty_sha256}
    added = signer.sign("GET", "examplebucket.s3.amazonaws.com", "/test.txt", "", headers, now)
    assert added == {
        "x-amz-date": "20130524T000000Z",
        "authorization": "AWS4-HMAC-SHA256 "
        "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    }


def test_quote_path_encodes_once_and_keeps_slashes() -> None:
    assert quote_path("/bucket/my key+é") == "/bucket/my%20key%2B%C3%A9"
    assert quote_path("/b//a/./../%41~_-.") == "/b//a/./../%2541~_-."
    assert quote_path("/b/a?x=1#f&y;z=") == "/b/a%3Fx%3D1%23f%26y%3Bz%3D"


def test_canonical_query_sorts_encoded_names_and_keeps_empty_values() -> None:
    assert canonical_query({}) == ""
    assert canonical_query({"uploads": ""}) == "uploads="
    params = {"uploadId": "a/b+c=", "partNumber": "7", "prefix": "x y~é", "Z": "1"}
    assert canonical_query(params) == "Z=1&partNumber=7&prefix=x%20y~%C3%A9&uploadId=a%2Fb%2Bc%3D"


FIXED_CASES = [
    ("GET", "s3.us-east-1.amazonaws.com", "/bucket/dir/key", {}, {}),
    ("HEAD", "bucket.s3.amazonaws.com", "/my key+é=%~", {}, {}),
    ("GET", "127.0.0.1:8333", "/bucket//a/./b", {"list-type": "2", "prefix": "a/"}, {}),
    ("POST", "127.0.0.1:8333", "/bucket/key", {"uploads": ""}, {"content-type": "text/plain"}),
    (
        "PUT",
        "bucket.localhost:9000",
        "/big file",
        {"partNumber": "12", "uploadId": "2~a/b+c=d%e"},
        {"content-length": "5242880", "x-amz-checksum-crc32c": "yZRlqg=="},
    ),
    (
        "GET",
        "127.0.0.1:8333",
        "/bucket/key",
        {},
        {"range": "  bytes=0-9  ", "x-amz-meta-note": "a   b \t c"},
    ),
    ("DELETE", "127.0.0.1:8333", "/bucket/key", {"uploadId": "x"}, {}),
]


def test_fixed_cases_match_botocore_with_and_without_token() -> None:
    for method, host, path, params, headers in FIXED_CASES:
        for creds in (CREDS, TOKEN_CREDS):
            expected = botocore_headers(method, host, path, params, headers, creds, NOW)
            assert our_headers(method, host, path, params, headers, creds, NOW) == expected
            assert expected["x-amz-content-sha256"] == UNSIGNED_PAYLOAD
            assert ("x-amz-security-token" in expected) == (creds.token is not None)


def test_signed_payload_hash_is_passed_through() -> None:
    body = b"hello world"
    headers = {"content-length": "11", "x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
    expected = botocore_headers("PUT", "127.0.0.1:8333", "/k", {}, headers, TOKEN_CREDS, NOW, body)
    assert our_headers("PUT", "127.0.0.1:8333", "/k", {}, headers, TOKEN_CREDS, NOW) == expected


def test_signing_key_follows_date_and_rotated_credentials() -> None:
    rotation = [CREDS, CREDS, TOKEN_CREDS, CREDS]
    calls: list[Credentials] = []

    def credentials() -> Credentials:
        calls.append(rotation[len(calls)])
        return calls[-1]

    signer = Signer(REGION, credentials)
    midnight = datetime.datetime(2024, 3, 1, tzinfo=datetime.timezone.utc).timestamp()
    for now in (midnight - 1, midnight, midnight + 1, midnight + 2):
        added = signer.sign("GET", "127.0.0.1:8333", "/b/k", "", {}, now)
        creds = calls[-1]
        assert added == botocore_headers("GET", "127.0.0.1:8333", "/b/k", {}, {}, creds, now)
    assert calls == rotation  # one credentials() call per sign()


def test_other_region_and_service_go_into_scope_and_key() -> None:
    host, region = "s3.eu-central-1.amazonaws.com", "eu-central-1"
    expected = botocore_headers("GET", host, "/b/k", {}, {}, CREDS, NOW, region=region)
    assert our_headers("GET", host, "/b/k", {}, {}, CREDS, NOW, region=region) == expected


KEY_CHARS = st.sampled_from([*"abcXYZ019 +=%~/.-_!?#&;:,'*()[]@$", "//", "é", "日", "😀"])
KEYS = st.lists(KEY_CHARS, min_size=1, max_size=20).map("".join)
BUCKETS = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True)
ODD = st.text(st.sampled_from(list("aZ09 /+=%~.-_é&?")), max_size=12)
VALUES = st.lists(st.sampled_from([*'aZ09=/+,;:"é', " ", "   ", "\t"]), max_size=16).map("".join)
ENDPOINTS = st.sampled_from(["s3.us-east-1.amazonaws.com", "127.0.0.1:8333", "localhost:9000"])
PARAMS: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.just({}),
    st.just({"uploads": ""}),
    st.fixed_dictionaries({"partNumber": st.integers(1, 10000).map(str), "uploadId": ODD}),
    st.fixed_dictionaries({"uploadId": ODD}),
    st.fixed_dictionaries(
        {"list-type": st.just("2")},
        optional={"prefix": ODD, "continuation-token": ODD, "max-keys": st.just("1000")},
    ),
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "content-length": st.integers(0, 5 * 2**30).map(str),
        "content-type": st.just("application/octet-stream"),
        "range": st.tuples(st.integers(0, 99), st.integers(100, 999)).map(
            lambda r: f"bytes={r[0]}-{r[1]}"
        ),
        "x-amz-checksum-crc32c": st.just("yZRlqg=="),
        "x-amz-meta-note": VALUES,
        "x-amz-meta-other": VALUES,
    },
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, str, dict[str, str], dict[str, str]]:
    method = draw(st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE"]))
    bucket, key, endpoint = draw(BUCKETS), draw(KEYS), draw(ENDPOINTS)
    if draw(st.booleans()):  # virtual-host style
        host, path = f"{bucket}.{endpoint}", "/" + key
    else:
        host, path = endpoint, f"/{bucket}/{key}"
    return method, host, path, draw(PARAMS), draw(HEADERS)


CREDENTIALS = st.builds(
    Credentials,
    st.from_regex(r"(AKIA|ASIA)[A-Z0-9]{16}", fullmatch=True),
    st.text(st.sampled_from(list("aZ09/+=")), min_size=1, max_size=40),
    st.one_of(st.none(), st.text(st.sampled_from(list("aZ09/+=")), min_size=1, max_size=60)),
)
# 2000-01-01 .. 2100-01-01, whole microseconds, as botocore's datetime clock sees them.
TIMES = st.tuples(st.integers(946_684_800, 4_102_444_799), st.integers(0, 999_999)).map(
    lambda t: t[0] + t[1] / 1e6
)


@settings(max_examples=200, deadline=None)
@given(
    request=requests(),
    creds=CREDENTIALS,
    now=TIMES,
    body=st.one_of(st.none(), st.binary(max_size=64)),
)
def test_generated_requests_match_botocore(
    request: tuple[str, str, str, dict[str, str], dict[str, str]],
    creds: Credentials,
    now: float,
    body: bytes | None,
) -> None:
    method, host, path, params, headers = request
    if body is not None:
        headers = {**headers, "x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
    assert quote_path(path) == percent_encode(path, safe="/~")
    expected = botocore_headers(method, host, path, params, headers, creds, now, body)
    assert our_headers(method, host, path, params, headers, creds, now) == expected


def test_import_does_not_load_botocore() -> None:
    code = "import sys, asyncplug.storage.sigv4; assert 'botocore' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
