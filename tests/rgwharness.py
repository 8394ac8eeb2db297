"""A real S3 server for tests: Ceph's RADOS Gateway (Debian 12's Ceph 16.2) on loopback.

tests/rgw/rgw-up.sh DIR starts, as the current unprivileged user, one ceph-mon, one
ceph-osd on memstore (objects live in the OSD's RAM) and radosgw on a free 127.0.0.1
port, creates a user with random keys and prints S3_ENDPOINT, S3_ACCESS_KEY, ... (kept
in DIR/env); tests/rgw/rgw-down.sh DIR stops exactly those processes. Rerunning
rgw-up.sh on the same DIR after radosgw was killed restarts radosgw alone (same port,
same data): the "server died and came back" tests.

bin/test installs the packages (bin/setup.sh APT_PACKAGES) when it runs as root, as CI
does. Outside CI (CI unset) the S3 tests skip when radosgw is missing; in CI they fail.

Faults: kill_radosgw() (SIGKILL: connections reset, later ones refused), restart().
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent / "rgw"
RADOSGW = Path(os.environ.get("WALKEEPER_RADOSGW", "/usr/bin/radosgw"))
ACCESS_ENV = "WALKEEPER_S3_ACCESS_KEY"
SECRET_ENV = "WALKEEPER_S3_SECRET_KEY"


# SSE-KMS with RGW's "testing" key backend (keys in ceph.conf, no KMS server; allowed over
# plain HTTP on loopback), and virtual-hosted buckets under VHOST_DOMAIN (RGW takes the
# bucket from the Host header when it ends in rgw_dns_name; path-style requests to
# 127.0.0.1 are unaffected).
KMS_KEYS = {"testkey-1": "YmluCmJvb3N0CmJvb3N0LWJ1aWxkCmNlcGguY29uZgo=",
            "testkey-2": "aWIKTWFrZWZpbGUKbWFuCm91dApzcmMKVGVzdGluZwo="}
VHOST_DOMAIN = "s3.walkeeper.test"
EXTRA_CONF = "\n".join([
    "rgw gc obj min wait = 5",
    "rgw crypt s3 kms backend = testing",
    "rgw crypt s3 kms encryption keys = " + " ".join(f"{k}={v}" for k, v in KMS_KEYS.items()),
    "rgw crypt require ssl = false",
    f"rgw dns name = {VHOST_DOMAIN}",
])


class RgwHarnessError(RuntimeError):
    pass


def available() -> bool:
    return RADOSGW.exists() and Path("/usr/bin/ceph-mon").exists() and \
        Path("/usr/bin/ceph-osd").exists()


def _parse(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = shlex.split(v)[0] if v else ""
    return out


class RgwServer:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.env: dict[str, str] = {}

    # ------------------------------------------------------------ life cycle
    def _up(self, timeout: float = 150) -> None:
        p = subprocess.run([str(HERE / "rgw-up.sh"), str(self.dir)], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                           env={**os.environ, "RGW_WATCH_PID": str(os.getpid()),
                                "RGW_MEMSTORE_BYTES": str(3 << 30), "RGW_TLS": "1",
                                "RGW_EXTRA_CONF": EXTRA_CONF})
        if p.returncode:
            raise RgwHarnessError(f"rgw-up.sh failed ({p.returncode}): {p.stderr[-3000:]}")
        self.env = _parse(p.stdout)

    def start(self) -> RgwServer:
        self._up()
        return self

    def stop(self) -> None:
        if (self.dir / "env").exists():
            subprocess.run([str(HERE / "rgw-down.sh"), str(self.dir)], timeout=90,
                           capture_output=True, stdin=subprocess.DEVNULL)

    def kill_radosgw(self) -> None:
        """SIGKILL radosgw (mon and OSD keep the data); restart() brings it back."""
        pid = int(self.env["RGW_PID"])
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ", 1)[1].startswith("Z"):
                        return
            except OSError:
                return
            time.sleep(0.05)

    def restart(self) -> None:
        self._up()

    def running(self) -> bool:
        try:
            cmd = Path(f"/proc/{self.env['RGW_PID']}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.dir).encode() in cmd

    def ensure_running(self) -> None:
        if not self.running():
            self.restart()

    # ------------------------------------------------------------ access
    @property
    def endpoint(self) -> str:
        return self.env["S3_ENDPOINT"]

    @property
    def tls_endpoint(self) -> str:
        """The same radosgw over HTTPS, with a certificate from a throwaway CA (ca_file)."""
        return self.env["S3_TLS_ENDPOINT"]

    @property
    def ca_file(self) -> str:
        return self.env["S3_CA_FILE"]

    @property
    def access_key(self) -> str:
        return self.env["S3_ACCESS_KEY"]

    @property
    def secret_key(self) -> str:
        return self.env["S3_SECRET_KEY"]

    @property
    def vhost_endpoint(self) -> str:
        """The plain endpoint under VHOST_DOMAIN, a name no resolver knows: reach it with
        proxy_env(), through which a client sends every request to radosgw in absolute
        form (`GET http://BUCKET.s3.walkeeper.test:PORT/KEY`), which radosgw accepts as a
        server should; it then reads the bucket from the host name, as it would behind
        wildcard DNS."""
        return f"http://{VHOST_DOMAIN}:{self.endpoint.rsplit(':', 1)[1]}"

    def proxy_env(self) -> dict[str, str]:
        return {"HTTP_PROXY": self.endpoint, "http_proxy": self.endpoint,
                "NO_PROXY": "", "no_proxy": ""}

    def requests_log(self) -> str:
        """radosgw's log: one line per request, with its target."""
        return (self.dir / "log" / "client.rgw.a.log").read_text(errors="replace")

    def stored_data_contains(self, bucket: str, marker: bytes) -> bool:
        """Whether the bytes RADOS holds for the bucket's objects (what is at rest, under
        RGW) contain `marker`."""
        conf = ["-c", str(self.dir / "ceph.conf")]
        stats = json.loads(subprocess.run(
            ["radosgw-admin", *conf, "bucket", "stats", f"--bucket={bucket}"],
            capture_output=True, text=True, check=True, timeout=60).stdout)
        prefix = stats["marker"] + "_"
        pool = ["rados", *conf, "-p", "default.rgw.buckets.data"]
        names = subprocess.run([*pool, "ls"], capture_output=True, text=True, check=True,
                               timeout=60).stdout.split()
        mine = [n for n in names if n.startswith(prefix)]
        if not mine:
            raise RgwHarnessError(f"no RADOS object for bucket {bucket}")
        for n in mine:
            data = subprocess.run([*pool, "get", n, "-"], capture_output=True, check=True,
                                  timeout=60).stdout
            if marker in data:
                return True
        return False

    def credentials_env(self) -> dict[str, str]:
        """The variables a store configured by store_toml() reads its keys from."""
        return {ACCESS_ENV: self.access_key, SECRET_ENV: self.secret_key}

    def client(self, secret: str | None = None):
        """A botocore client for the test's own look at the bucket."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=secret or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required",
                          connect_timeout=10, read_timeout=30))

    def new_bucket(self, prefix: str = "wk") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object in the bucket under prefix: key -> size."""
        c = self.client()
        out, token = {}, None
        while True:
            kw = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            r = c.list_objects_v2(**kw)
            out.update({o["Key"]: o["Size"] for o in r.get("Contents", [])})
            if not r.get("IsTruncated"):
                return out
            token = r["NextContinuationToken"]

    def uploads(self, bucket: str) -> list[dict]:
        return self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def empty_bucket(self, bucket: str) -> None:
        c = self.client()
        for u in self.uploads(bucket):
            c.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
        for k in self.keys(bucket):
            c.delete_object(Bucket=bucket, Key=k)
        c.delete_bucket(Bucket=bucket)

    def store_toml(self, bucket: str, name: str = "objects", prefix: str = "", **extra) -> str:
        """A [[stores]] table for this server (the keys come from credentials_env())."""
        lines = ["[[stores]]", f'name = "{name}"', 'type = "s3"', f'endpoint = "{self.endpoint}"',
                 'region = "us-east-1"', f'bucket = "{bucket}"', f'prefix = "{prefix}"',
                 f'access_key_env = "{ACCESS_ENV}"', f'secret_key_env = "{SECRET_ENV}"',
                 "timeout = 10", "retries = 3"]
        for k, v in extra.items():
            lines.append(f"{k} = {v!r}".replace("'", '"') if isinstance(v, str) else
                         f"{k} = {str(v).lower() if isinstance(v, bool) else v}")
        return "\n".join(lines) + "\n"
