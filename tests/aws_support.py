"""AWS test servers on 127.0.0.1: moto (with signatures checked) and credential sources.

For what SeaweedFS does not emulate: SSE-KMS, storage classes, archived objects, IAM
and STS (temporary credentials whose session token and signature moto verifies).
The server starts with authentication off, gets one IAM user (all actions allowed),
one role it may assume and one KMS key, then authentication is switched on: from then
on every request must be signed with the user's keys or with credentials of an
assumed role.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.seaweed import stop_group

HOST = "127.0.0.1"
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
TRUST_ALL = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class MotoServer:
    """`with MotoServer() as moto:` a running, bootstrapped server at `moto.endpoint`."""

    endpoint: str = ""
    access_key: str = ""
    secret_key: str = ""
    role_arn: str = ""
    kms_key_id: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: Any = field(default=None, repr=False)
    _sts: Any = field(default=None, repr=False)

    def start(self, log_path: Path) -> MotoServer:
        port = _free_port()
        executable = Path(sys.executable).parent / "moto_server"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [str(executable), "-H", HOST, "-p", str(port)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
        self.endpoint = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 60
        while True:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start; see {log_path}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.2)
        self._bootstrap()
        return self

    def _bootstrap(self) -> None:
        iam = self.client("iam", "bootstrap", "bootstrap")
        iam.create_user(UserName="asyncplug")
        iam.put_user_policy(UserName="asyncplug", PolicyName="all", PolicyDocument=ALLOW_ALL)
        keys = iam.create_access_key(UserName="asyncplug")["AccessKey"]
        self.access_key, self.secret_key = keys["AccessKeyId"], keys["SecretAccessKey"]
        role = iam.create_role(RoleName="backup-role", AssumeRolePolicyDocument=TRUST_ALL)
        iam.put_role_policy(RoleName="backup-role", PolicyName="all", PolicyDocument=ALLOW_ALL)
        self.role_arn = role["Role"]["Arn"]
        kms = self.client("kms", "bootstrap", "bootstrap")
        self.kms_key_id = kms.create_key(Description="asyncplug tests")["KeyMetadata"]["KeyId"]
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form body would be parsed away
        )
        urllib.request.urlopen(request, timeout=10).close()  # signatures checked from now on

    def client(self, service: str = "s3", key: str = "", secret: str = "", token: str = "") -> Any:
        """A synchronous botocore client (the user's keys unless others are given)."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            service, endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=key or self.access_key,
            aws_secret_access_key=secret or self.secret_key,
            aws_session_token=token or None,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )  # fmt: skip

    def assume_role(self, seconds: int = 900) -> dict[str, Any]:
        """Fresh temporary credentials of the role (STS AssumeRole)."""
        if self._sts is None:
            self._sts = self.client("sts")
        answer = self._sts.assume_role(
            RoleArn=self.role_arn, RoleSessionName="asyncplug", DurationSeconds=seconds
        )
        return dict(answer["Credentials"])

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def plugin_options(self, bucket: str, folder: str = "prod/cluster1") -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "bucket": bucket,
            "folder": folder,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "encryption": "off",
        }

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_group(proc)
        if self._log is not None:
            self._log.close()
            self._log = None


class CredentialServer:
    """The AWS credential sources a host offers, on 127.0.0.1, each handing out fresh
    temporary credentials of moto's role (STS AssumeRole) that expire `lifetime`
    seconds after the fetch:

    - /container: the container-credentials endpoint (ECS, EKS pod identity), for
      AWS_CONTAINER_CREDENTIALS_FULL_URI; checks the Authorization token when set;
    - /latest/...: the EC2 instance-metadata service, IMDSv2 only (a session token
      from PUT /latest/api/token is required), for AWS_EC2_METADATA_SERVICE_ENDPOINT;
    - POST /: STS AssumeRoleWithWebIdentity (EKS IRSA), for AWS_ENDPOINT_URL_STS;
      checks the web identity token.
    """

    ROLE = "backup-role"
    IMDS_TOKEN = "imds-session-token"

    def __init__(self, moto: MotoServer, lifetime: float = 3600) -> None:
        self.moto = moto
        self.lifetime = lifetime
        self.authorization = ""  # expected on /container when set
        self.web_identity_token = ""  # expected by AssumeRoleWithWebIdentity
        self.hits: dict[str, int] = {"container": 0, "imds": 0, "web-identity": 0}
        self.keys: list[str] = []  # access key ids handed out, in order
        self.url = ""
        self._server: Any = None
        self._thread: Any = None

    def credentials(self, kind: str) -> dict[str, str]:
        import datetime

        creds = self.moto.assume_role()
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=self.lifetime
        )
        self.hits[kind] += 1
        self.keys.append(creds["AccessKeyId"])
        return {
            "AccessKeyId": creds["AccessKeyId"],
            "SecretAccessKey": creds["SecretAccessKey"],
            "Token": creds["SessionToken"],
            "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def start(self) -> CredentialServer:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

            def reply(self, status: int, body: str, kind: str = "application/json") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                if self.path == "/latest/api/token" and self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                ):
                    self.reply(200, owner.IMDS_TOKEN, "text/plain")
                else:
                    self.reply(400, "")

            def do_GET(self) -> None:
                if self.path == "/container":
                    if owner.authorization and (
                        self.headers.get("Authorization") != owner.authorization
                    ):
                        self.reply(401, "")
                        return
                    self.reply(200, json.dumps(owner.credentials("container")))
                    return
                if not self.path.startswith("/latest/meta-data/iam/security-credentials/"):
                    self.reply(404, "")  # e.g. the -extended API: botocore falls back
                    return
                if self.headers.get("X-aws-ec2-metadata-token") != owner.IMDS_TOKEN:
                    self.reply(401, "")  # IMDSv1 refused
                    return
                role = self.path.rsplit("/", 1)[1]
                if not role:
                    self.reply(200, owner.ROLE, "text/plain")
                    return
                creds = owner.credentials("imds")
                body = {"Code": "Success", "Type": "AWS-HMAC", **creds}
                self.reply(200, json.dumps(body) if role == owner.ROLE else "", "text/plain")

            def do_POST(self) -> None:
                from urllib.parse import parse_qs

                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                if form.get("Action") != ["AssumeRoleWithWebIdentity"] or form.get(
                    "WebIdentityToken"
                ) != [owner.web_identity_token]:
                    self.reply(403, "<ErrorResponse><Error><Code>AccessDenied</Code></Error>"
                               "</ErrorResponse>", "text/xml")  # fmt: skip
                    return
                creds = owner.credentials("web-identity")
                self.reply(200, WEB_IDENTITY_RESPONSE.format(**creds), "text/xml")

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{HOST}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None


WEB_IDENTITY_RESPONSE = """<AssumeRoleWithWebIdentityResponse \
xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult>\
<Credentials><AccessKeyId>{AccessKeyId}</AccessKeyId>\
<SecretAccessKey>{SecretAccessKey}</SecretAccessKey><SessionToken>{Token}</SessionToken>\
<Expiration>{Expiration}</Expiration></Credentials>\
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/backup-role/asyncplug</Arn>\
<AssumedRoleId>AROAEXAMPLE:asyncplug</AssumedRoleId></AssumedRoleUser>\
<SubjectFromWebIdentityToken>asyncplug</SubjectFromWebIdentityToken>\
</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>1</RequestId>\
</ResponseMetadata></AssumeRoleWithWebIdentityResponse>"""
