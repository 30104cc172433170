"""Whom TLS trusts, the same on both S3 paths (s3lean.py and s3boto.py).

The system trust store (ssl.create_default_context(): OpenSSL's default paths, what
the Go plugin and curl use), plus one extra bundle when one is named: the ca_bundle
option, else AWS_CA_BUNDLE, else `ca_bundle` of the AWS profile in the AWS config
file (botocore's order). botocore alone would trust only that bundle, or certifi's,
and the two paths would disagree (setup through aiobotocore passing, backup_data on
the lean path failing). Where OpenSSL has no store at all (minimal images), certifi's
bundle, botocore's default, stands in for it.

A certificate that fails verification is not retried (it will fail the same way);
the message says what was trusted.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from asyncplug.config import Config
from asyncplug.errors import ConfigError, StorageError

SYSTEM = "the system trust store"


@dataclass(frozen=True)
class Trust:
    bundle: str = ""  # an extra CA bundle file, "" for none
    source: str = ""  # where it was named, for messages

    def describe(self) -> str:
        store = SYSTEM if _system_store() else "certifi's bundle (no system trust store found)"
        return f"{store} + {self.bundle} ({self.source})" if self.bundle else store


def trust_for(config: Config) -> Trust:
    if config.ca_bundle:
        return Trust(os.path.expanduser(config.ca_bundle), "ca_bundle option")
    bundle = os.environ.get("AWS_CA_BUNDLE", "")
    if bundle:
        return Trust(os.path.expanduser(bundle), "AWS_CA_BUNDLE")
    profile, bundle = _profile_ca_bundle(str(getattr(config, "aws_profile", "") or ""))
    if bundle:
        return Trust(os.path.expanduser(bundle), f"ca_bundle of AWS profile {profile}")
    return Trust()


def _profile_ca_bundle(profile: str) -> tuple[str, str]:
    """(profile, its ca_bundle) from the AWS config file, as botocore reads it."""
    env = os.environ
    profile = profile or env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    path = os.path.expanduser(os.path.expandvars(env.get("AWS_CONFIG_FILE", "~/.aws/config")))
    if not os.path.isfile(path):
        return profile, ""
    import configparser  # here: most runs never need it

    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return profile, ""  # botocore reports a broken file when it needs it
    for section in (f"profile {profile}", profile if profile == "default" else ""):
        if section and parser.has_option(section, "ca_bundle"):
            return profile, parser.get(section, "ca_bundle").strip()
    return profile, ""


def _system_store() -> bool:
    paths = ssl.get_default_verify_paths()
    return bool(paths.cafile or paths.capath)


@functools.lru_cache(maxsize=4)
def context(trust: Trust) -> ssl.SSLContext:
    """A client context verifying certificates and host names against `trust`, one per
    process for both paths: loading the system store costs ~24 ms of CPU."""
    tls = ssl.create_default_context()
    if not _system_store():
        try:
            import certifi

            tls.load_verify_locations(cafile=certifi.where())
        except ImportError:
            import botocore

            tls.load_verify_locations(
                cafile=os.path.join(os.path.dirname(botocore.__file__), "cacert.pem")
            )
    if trust.bundle:
        try:
            tls.load_verify_locations(cafile=trust.bundle)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or "no certificate in it"
            raise ConfigError(
                f"cannot load CA bundle {trust.bundle} ({trust.source}): {reason}"
            ) from None
    return tls


def certificate_failure(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind an exception, if that is what it is
    (botocore's SSLError wraps ours or aiohttp's, which holds ssl's)."""
    seen = 0
    while exc is not None and seen < 8:
        inner = getattr(exc, "certificate_error", None)  # aiohttp's, itself one too
        if isinstance(inner, ssl.SSLCertVerificationError):
            return inner
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        inner = (getattr(exc, "kwargs", None) or {}).get("error")
        exc = inner if isinstance(inner, BaseException) else exc.__cause__
        seen += 1
    return None


def certificate_error(exc: BaseException, what: str, trust: Trust) -> StorageError | None:
    """The one-line error for a certificate that failed verification; None for others."""
    failure = certificate_failure(exc)
    if failure is None:
        return None
    kwargs = getattr(exc, "kwargs", None) or {}
    url = str(kwargs.get("endpoint_url") or "")
    host = urlsplit(url).netloc.rpartition("@")[2] if "://" in url else "the endpoint"
    reason = getattr(failure, "verify_message", None) or "certificate verify failed"
    return StorageError(
        f"{what}: the TLS certificate of {host} is not trusted ({reason}); "
        f"trusted: {trust.describe()}; set ca_bundle to the CA that signed it"
    )
