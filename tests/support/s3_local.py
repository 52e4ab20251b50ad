"""A throwaway S3-API server (SeaweedFS `weed server -s3`) on free loopback ports, for tests (never production).

Not a mock: the real SeaweedFS master, volume, filer and S3 gateway in one process, data in a temporary folder.
The binary is built once per pinned version by `bash scripts/seaweedfs.sh build` (scripts/test.sh runs it); this
module only finds and starts it. `LocalS3.request` signs plain S3 REST calls with AWS Signature V4 (stdlib only),
enough to create buckets and to probe conditional puts without an AWS SDK.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from lfm.errors import LfmError
from tests.support.redis_local import terminate

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "seaweedfs.sh"
REGION = "us-east-1"


class NoS3(LfmError):
    """No SeaweedFS binary, or it did not come up."""


def weed_binary() -> Path:
    """Where scripts/seaweedfs.sh builds `weed` (the pinned version lives only in that script);
    LFM_SEAWEEDFS_BIN overrides it."""
    override = os.environ.get("LFM_SEAWEEDFS_BIN")
    if override:
        return Path(override)
    out = subprocess.run(["bash", str(SCRIPT), "path"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(n: int) -> list[int]:
    """n distinct loopback ports, free now and below the kernel's ephemeral range: weed binds its listeners one after
    another over ~2 s while its own parts already connect to each other, and a port from the ephemeral range can be
    taken meanwhile as the local end of one of those connections (seen: "bind: address already in use")."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng, ports = random.Random(), []
    while len(ports) < n:
        port = rng.randrange(20000, max(low, 20000 + 4 * n))
        if port in ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


@dataclass
class LocalS3:
    process: subprocess.Popen
    port: int
    workdir: str
    access_key: str
    secret_key: str
    bucket: str
    startup_s: float = 0.0
    _log: object = field(default=None, repr=False)
    _sockets: tuple[str, ...] = ()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self) -> dict[str, str]:
        """delta-rs / object_store options for s3://<bucket>/... on this server. AWS_CONDITIONAL_PUT=etag makes
        every commit a PUT with `If-None-Match: *`, so two writers racing for one version cannot both win, without
        DynamoDB (delta-rs docs, "CloudFlare R2 & Minio":
        https://delta-io.github.io/delta-rs/integrations/object-storage/s3-like). deltalake 1.6.6 behaved the same
        here without it (1.x commits with conditional puts by default); it is set anyway, as the docs say."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_CONDITIONAL_PUT": "etag",
        }

    def uri(self, path: str) -> str:
        return f"s3://{self.bucket}/{path.lstrip('/')}"

    # --- a minimal signed S3 REST client (path-style), enough for buckets and conditional puts -----------------
    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[int, bytes]:
        """One SigV4-signed request to `path` ("/bucket/key"); returns (HTTP status, body)."""
        now = dt.datetime.now(dt.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload_hash = hashlib.sha256(body).hexdigest()
        hdrs = {k.lower(): v.strip() for k, v in (headers or {}).items()}
        hdrs.update({"host": f"127.0.0.1:{self.port}", "x-amz-date": amz_date,
                     "x-amz-content-sha256": payload_hash})
        canonical_uri = quote(path, safe="/-_.~")
        signed = ";".join(sorted(hdrs))
        canonical = "\n".join([method, canonical_uri, "",
                               "".join(f"{k}:{hdrs[k]}\n" for k in sorted(hdrs)), signed, payload_hash])
        scope = f"{day}/{REGION}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = _hmac(_hmac(_hmac(_hmac(f"AWS4{self.secret_key}".encode(), day), REGION), "s3"), "aws4_request")
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        hdrs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                 f"SignedHeaders={signed}, Signature={signature}")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, canonical_uri, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def put_object(self, key: str, body: bytes, if_none_match: bool = False,
                   bucket: str | None = None) -> tuple[int, bytes]:
        headers = {"If-None-Match": "*"} if if_none_match else {}
        return self.request("PUT", f"/{bucket or self.bucket}/{key}", body, headers)

    def get_object(self, key: str, bucket: str | None = None) -> tuple[int, bytes]:
        return self.request("GET", f"/{bucket or self.bucket}/{key}")

    def create_bucket(self, name: str) -> None:
        status, body = self.request("PUT", f"/{name}")
        if status not in (200, 409):  # 409: BucketAlreadyOwnedByYou
            raise NoS3(f"creating bucket {name}: HTTP {status} {body[:300]!r}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.workdir, "weed.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s: a graceful `weed server` stop takes ~15 s and the data is thrown away."""
        terminate(self.process, grace_s=3)
        if self._log is not None:
            self._log.close()
        for sock in self._sockets:  # weed's gRPC Unix sockets sit in /tmp; a killed weed leaves them behind
            Path(sock).unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _grpc_sockets(ports: list[int]) -> tuple[str, ...]:
    """The Unix sockets `weed server` opens beside its gRPC ports (hard-wired to /tmp/seaweedfs-<svc>-grpc-<port>)."""
    return tuple(f"/tmp/seaweedfs-{svc}-grpc-{port}.sock" for svc, port in zip(("master", "volume", "filer", "s3"),
                                                                              ports[4:]))


def _weed_command(binary: Path, data: Path, config: Path, ports: list[int]) -> list[str]:
    master, volume, filer, s3, master_grpc, volume_grpc, filer_grpc, s3_grpc = ports
    return [str(binary), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-filer.localSocket={data.parent / 'filer.sock'}", f"-s3.localSocket={data.parent / 's3.sock'}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # no Iceberg catalog / Lance namespace ports (fixed defaults)
            # small and quick: 8 MB volumes, at most 16 of them, no waiting on stop
            "-master.volumeSizeLimitMB=8", "-volume.max=16", "-volume.preStopSeconds=0",
            "-master.electionTimeout=1s", "-master.telemetry=false"]


def start_s3(bucket: str = "lfm-test", timeout_s: float = 60.0) -> LocalS3:
    """Start `weed server -s3` on free 127.0.0.1 ports with one generated identity, create `bucket`, and wait until
    an object can be written (not merely until the port opens: the filer and a volume must be up too)."""
    binary = weed_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise NoS3(f"no SeaweedFS binary at {binary}: run `bash scripts/seaweedfs.sh build` once "
                   f"(scripts/test.sh does; 7-15 min on 2 cores, cached per version)")
    last_error = "not started"
    for _ in range(3):  # a free port can be taken between probing and binding: retry
        workdir = Path(tempfile.mkdtemp(prefix="lfm-s3-"))
        (workdir / "data").mkdir()
        access_key, secret_key = "lfm" + secrets.token_hex(8), secrets.token_hex(24)
        config = workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "lfm-test", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        ports = _free_ports(8)
        log = open(workdir / "weed.log", "wb")
        started = time.monotonic()
        proc = subprocess.Popen(_weed_command(binary, workdir / "data", config, ports),
                                stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        server = LocalS3(proc, ports[3], str(workdir), access_key, secret_key, bucket, _log=log,
                         _sockets=_grpc_sockets(ports))
        deadline = started + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                server.create_bucket(bucket)
                status, body = server.put_object(".lfm-ready", b"ok")
                if status == 200:
                    server.startup_s = time.monotonic() - started
                    return server
                last_error = f"probe put: HTTP {status} {body[:200]!r}"
            except (OSError, http.client.HTTPException, NoS3) as err:
                last_error = str(err)
            time.sleep(0.2)
        last_error = f"{last_error}\n{server.log_tail()}"
        server.stop()
    raise NoS3(f"SeaweedFS did not come up on loopback: {last_error}")
