"""A store in an S3 bucket (AWS S3, Ceph RGW, MinIO), through botocore.

Keys: `<prefix>/<key>`, the same layout as a local store's (docs/format.md).

No-clobber (docs/format.md "S3"):
- Objects up to SINGLE_MAX bytes are one PUT with `If-None-Match: *`. A 412 means the
  name is taken: ObjectExists, and the caller compares contents (same content is
  success). Whether the bucket enforces the condition is probed once per store object
  (a versioned bucket or an older server ignores it silently): a conditional PUT of
  `<prefix>.walkeeper/conditional-put-probe`, twice when the first one succeeds.
- Larger objects are multipart uploads, parts of PART_SIZE (doubling every 1000 parts
  so that 10,000 parts reach 5 TiB), each with its Content-MD5, held in memory up to
  PART_SIZE and spooled to a temporary file beyond. CompleteMultipartUpload ignores
  `If-None-Match`, so a writer first claims the name with a conditional PUT of a small
  `.tmp-claim-<name>` object beside it, checks that the name is free, completes,
  checks that the object is its own (its upload token in the metadata) and drops the
  claim. Where the bucket does not enforce conditions, and for a claim older than
  CLAIM_STALE seconds taken over from a dead writer, the check-then-write has a window
  of one request: documented in docs/format.md.
- A failed upload is aborted, except when the final name already holds this upload's
  own object (on RGW, aborting a completed upload later destroys the object's data);
  uploads left behind are removed by `expire` (abort_stale_uploads).

Errors: throttling, 5xx and dropped connections are retried with backoff within
`timeout` seconds, up to `retries` attempts; a wrong secret, a missing bucket or a
denied request is a StoreError naming the store, the bucket and the fix. An absent key
is ObjectNotFound only when the bucket itself answered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import threading
import time

import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError as BotoConnectionError,
                                 HTTPClientError, NoCredentialsError)

from walkeeper import log
from walkeeper.errors import ConfigError, ObjectExists, ObjectNotFound, StoreError
from walkeeper.format.layout import check_key, is_temp
from walkeeper.stores.base import Entry
from walkeeper.stores.registry import StoreConfig, location

MiB = 1 << 20
SINGLE_MAX = 20 * MiB            # one PUT up to this size: a 16 MiB WAL segment, even stored raw
PART_SIZE = 16 * MiB             # first parts; doubled every PART_STEP parts
PART_STEP = 1000
MAX_PART = 5 << 30
IN_MEMORY = 16 * MiB             # a part larger than this is spooled to a temporary file
CLAIM_STALE = 900                # seconds after which a claim without an object is a dead writer's
PROBE_KEY = ".walkeeper/conditional-put-probe"
TOKEN_META = "walkeeper-upload"
SHA_META = "sha256"
CLAIM_PREFIX = ".tmp-claim-"

_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                    "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                    "RequestLimitExceeded", "TooManyRequests", "503", "500", "502", "504"}
_AUTH_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken",
               "AuthorizationHeaderMalformed", "InvalidClientTokenId"}


def part_size(number: int) -> int:
    """Size of part `number` (1-based): PART_SIZE, doubled every PART_STEP parts, so that
    10,000 parts hold 16 MiB x 1000 x (2^10 - 1), over S3's 5 TiB object limit."""
    return min(PART_SIZE << ((number - 1) // PART_STEP), MAX_PART)


def _code(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _connection_reason(exc) -> str:
    name = type(exc).__name__
    if "ConnectTimeout" in name:
        return "connecting timed out"
    if "ReadTimeout" in name:
        return "no answer within the timeout"
    if name == "EndpointConnectionError":
        return "cannot connect"
    if "ConnectionClosed" in name:
        return "the connection was closed by the server"
    return name


def _tls_reason(exc) -> str:
    text = str(exc)
    for known in ("certificate verify failed", "self-signed certificate", "hostname mismatch",
                  "unable to get local issuer certificate", "wrong version number"):
        if known in text:
            return known
    return type(exc).__name__


def _md5(data) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class _Part:
    """One part being filled: in memory, or in a temporary file past IN_MEMORY."""

    def __init__(self, number: int):
        self.number = number
        self.limit = part_size(number)
        self.buf = bytearray()
        self.file = None
        self.md5 = hashlib.md5()
        self.size = 0

    def add(self, view: memoryview) -> memoryview:
        """Take what fits; return the rest."""
        n = min(len(view), self.limit - self.size)
        chunk = view[:n]
        self.md5.update(chunk)
        if self.file is None and self.size + n > IN_MEMORY:
            self.file = tempfile.TemporaryFile(prefix="walkeeper-part-")
            self.file.write(self.buf)
            self.buf = bytearray()
        if self.file is not None:
            self.file.write(chunk)
        else:
            self.buf += chunk
        self.size += n
        return view[n:]

    def full(self) -> bool:
        return self.size >= self.limit

    def body(self):
        if self.file is None:
            return self.buf         # botocore sends a bytearray as is: no 16 MiB copy
        self.file.seek(0)
        return self.file

    def rewind(self) -> None:
        if self.file is not None:
            self.file.seek(0)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.buf = bytearray()


class _Sender:
    """The thread of one multipart upload that sends its parts, one at a time."""

    def __init__(self, upload: S3Upload):
        self.upload = upload
        self.cond = threading.Condition()
        self.todo: _Part | None = None
        self.out = None             # the last part's {"PartNumber", "ETag"} or its exception
        self.busy = False
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="s3-parts", daemon=True)
        self.thread.start()

    def submit(self, part: _Part) -> None:
        with self.cond:
            self.todo, self.busy = part, True
            self.cond.notify_all()

    def result(self):
        """Wait for the part in flight; its result (None when there was none)."""
        with self.cond:
            while self.busy:
                self.cond.wait()
            out, self.out = self.out, None
            return out

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join()

    def _run(self) -> None:
        up = self.upload
        s = up.store
        while True:
            with self.cond:
                while self.todo is None and not self.stopping:
                    self.cond.wait()
                if self.todo is None:
                    return
                part, self.todo = self.todo, None
            md5 = base64.b64encode(part.md5.digest()).decode()

            def send(c):
                part.rewind()
                return c.upload_part(Bucket=s.bucket, Key=up.key, UploadId=up.upload_id,
                                     PartNumber=part.number, Body=part.body(),
                                     ContentLength=part.size, ContentMD5=md5)

            try:
                r = s._call(f"upload part {part.number} of", up.key, send)
                out = {"PartNumber": part.number, "ETag": r["ETag"]}
            except BaseException as exc:  # noqa: BLE001 - raised by S3Upload._wait_part
                out = exc
            finally:
                part.close()
            with self.cond:
                self.out, self.busy = out, False
                self.cond.notify_all()


class S3Upload:
    def __init__(self, store: S3Store, key: str):
        self.store = store
        self.rel = key
        self.key = store._key(key)
        self.token = os.urandom(12).hex()
        self.sha = hashlib.sha256()
        self.size = 0
        self.buf = bytearray()          # until SINGLE_MAX: one PUT
        self.upload_id: str | None = None
        self.part: _Part | None = None
        self.parts: list[dict] = []
        self.sender: _Sender | None = None     # the thread sending parts
        self.numbered = 0               # parts begun
        self.done = False

    # ---------------------------------------------------------------- writing
    def write(self, data: bytes) -> None:
        if self.done:
            raise StoreError(self.store.name, f"upload of {self.key} already finished")
        self.sha.update(data)
        self.size += len(data)
        try:
            if self.upload_id is None:
                self.buf += data
                if len(self.buf) <= SINGLE_MAX:
                    return
                self._start_multipart()
                data, self.buf = self.buf, bytearray()      # handed over, not copied
            view = memoryview(data)
            while view:
                if self.part is None:
                    self.numbered += 1
                    self.part = _Part(self.numbered)
                view = self.part.add(view)
                if self.part.full():
                    self._send_part()
        except StoreError:
            self.abort()
            raise

    def _start_multipart(self) -> None:
        from walkeeper.detach import keep_freed_memory

        # A fixed mmap threshold (8 MiB): 16 MiB parts are mapped and unmapped as they
        # come and go, instead of glibc's dynamic threshold moving them into heaps that
        # keep the memory
        keep_freed_memory()
        s = self.store
        r = s._call("start upload of", self.key, lambda c: c.create_multipart_upload(
            Bucket=s.bucket, Key=self.key, Metadata={TOKEN_META: self.token}, **s._put_extra()))
        self.upload_id = r["UploadId"]
        log.debug(f"store {s.name}: multipart upload of {self.key} started ({self.upload_id})")

    def _send_part(self) -> None:
        """Hand the part just filled to this upload's sender thread, which sends it while
        the next one fills (compression and upload overlap); at most one part in
        flight, so at most two in memory. One thread for the whole upload: a thread per
        part made glibc give each its own malloc arena, each keeping 16-32 MiB."""
        self._wait_part()
        part, self.part = self.part, None
        if self.sender is None:
            self.sender = _Sender(self)
        self.sender.submit(part)

    def _wait_part(self) -> None:
        if self.sender is None:
            return
        result = self.sender.result()
        if result is None:
            return
        if isinstance(result, BaseException):
            if isinstance(result, StoreError):
                raise result
            raise StoreError(self.store.name, f"cannot upload a part of s3://"
                             f"{self.store.bucket}/{self.key}: {type(result).__name__}: {result}")
        self.parts.append(result)

    def _stop_sender(self) -> None:
        if self.sender is not None:
            self.sender.stop()
            self.sender = None

    # ---------------------------------------------------------------- commit
    def commit(self) -> None:
        if self.done:
            raise StoreError(self.store.name, f"upload of {self.key} already finished")
        try:
            if self.upload_id is None:
                self._put_single()
            else:
                self._complete_multipart()
        except ObjectExists:
            self.abort()
            raise
        except StoreError:
            self.abort()
            raise
        self.done = True

    def _put_single(self) -> None:
        s = self.store
        body = bytes(self.buf)
        self.buf = bytearray()
        meta = {SHA_META: self.sha.hexdigest(), TOKEN_META: self.token}
        md5 = _md5(body)
        if s.enforces_conditions():
            try:
                s._call("store", self.key, lambda c: c.put_object(
                    Bucket=s.bucket, Key=self.key, Body=body, ContentMD5=md5, IfNoneMatch="*",
                    Metadata=meta, **s._put_extra()), taken_ok=True)
            except _Taken:
                if s._token_of(self.key) == self.token:
                    return          # our own PUT, answered 412 on a retry after a lost reply
                raise ObjectExists(s.name, f"s3://{s.bucket}/{self.key} already exists") from None
            return
        # A server that ignores If-None-Match: look, write, look again (a window of one
        # request, docs/format.md)
        if s._token_of(self.key) is not None:
            raise ObjectExists(s.name, f"s3://{s.bucket}/{self.key} already exists")
        s._call("store", self.key, lambda c: c.put_object(
            Bucket=s.bucket, Key=self.key, Body=body, ContentMD5=md5, Metadata=meta,
            **s._put_extra()))
        if s._token_of(self.key) != self.token:
            raise ObjectExists(s.name, f"s3://{s.bucket}/{self.key} was written by another "
                                       f"writer at the same time")

    def _claim_key(self) -> str:
        head, _, base = self.key.rpartition("/")
        return f"{head}/{CLAIM_PREFIX}{base}" if head else f"{CLAIM_PREFIX}{base}"

    def _claim(self) -> str | None:
        """Claim the final name (conditional PUT of a claim object); None when the
        bucket does not enforce conditions (no claim is possible)."""
        s = self.store
        if not s.enforces_conditions():
            return None
        claim = self._claim_key()
        body = json.dumps({"upload": self.upload_id, "token": self.token,
                           "sha256": self.sha.hexdigest(), "time": time.time()}).encode()
        for attempt in range(2):
            try:
                s._call("claim", claim, lambda c: c.put_object(
                    Bucket=s.bucket, Key=claim, Body=body, IfNoneMatch="*", **s._sse()),
                    taken_ok=True)
                return claim
            except _Taken:
                pass
            if s._token_of(self.key) is not None:
                raise ObjectExists(s.name, f"s3://{s.bucket}/{self.key} already exists")
            age = s._age(claim)
            if age is None:
                continue            # the claim went away meanwhile: try again
            if age < CLAIM_STALE or attempt:
                raise StoreError(s.name, f"another writer is completing s3://{s.bucket}/"
                                 f"{self.key} (claim {claim}, {age:.0f} s old); retry later, or "
                                 f"delete the claim if no walkeeper runs there")
            log.warn(f"store {s.name}: taking over the claim on {self.key} of a writer dead "
                     f"for {age:.0f} s")
            s._call("delete", claim, lambda c: c.delete_object(Bucket=s.bucket, Key=claim))
        raise StoreError(s.name, f"cannot claim s3://{s.bucket}/{self.key}")

    def _complete_multipart(self) -> None:
        s = self.store
        if self.part is not None and (self.part.size or self.numbered == 1):
            self._send_part()
        try:
            self._wait_part()
        finally:
            self._stop_sender()
        claim = self._claim()
        try:
            if s._token_of(self.key) is not None:
                raise ObjectExists(s.name, f"s3://{s.bucket}/{self.key} already exists")
            # AWS S3 honours the condition on completion too; RGW 16 ignores it (the
            # claim covers that)
            cond = {"IfNoneMatch": "*"} if claim is not None else {}
            try:
                s._call("complete upload of", self.key, lambda c: c.complete_multipart_upload(
                    Bucket=s.bucket, Key=self.key, UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts}, **cond), taken_ok=True)
            except _Taken:
                raise ObjectExists(s.name, f"s3://{s.bucket}/{self.key} already exists") from None
            except StoreError:
                # The reply may be lost while the object was made: look before failing.
                if self._mine() is not True:
                    raise
            if self._mine() is not True:
                raise ObjectExists(s.name, f"s3://{s.bucket}/{self.key} was written by another "
                                           f"writer at the same time")
            self.done = True
            try:        # the content's sha256, which the upload could not carry in its metadata
                s._call("tag", self.key, lambda c: c.put_object_tagging(
                    Bucket=s.bucket, Key=self.key, Tagging={"TagSet": [
                        {"Key": SHA_META, "Value": self.sha.hexdigest()}]}), attempts=1)
            except StoreError as exc:
                log.debug(f"{exc} (the sha256 tag is informative only)")
        finally:
            if claim is not None:
                try:
                    s._call("delete", claim, lambda c: c.delete_object(Bucket=s.bucket, Key=claim))
                except StoreError as exc:
                    log.warn(f"{exc}; the claim is removed by the next writer or expire")

    def _mine(self) -> bool | None:
        """Whether the final name holds this upload's object (None: cannot tell)."""
        try:
            return self.store._token_of(self.key) == self.token
        except StoreError:
            return None

    # ---------------------------------------------------------------- abort
    def abort(self) -> None:
        try:
            self._wait_part()
        except StoreError:
            pass
        self._stop_sender()
        if self.part is not None:
            self.part.close()
            self.part = None
        self.buf = bytearray()
        if self.upload_id is None or self.done:
            return
        upload, self.upload_id = self.upload_id, None
        # Never abort an upload whose object was made: RGW's garbage collection would
        # later delete that object's data. Cannot tell (server gone): leave it to expire.
        mine = self._mine()
        if mine is not False:
            if mine:
                self.done = True
            return
        s = self.store
        try:
            s._call("abort upload of", self.key, lambda c: c.abort_multipart_upload(
                Bucket=s.bucket, Key=self.key, UploadId=upload), attempts=2)
        except (StoreError, ObjectNotFound) as exc:
            log.debug(f"{exc}; the upload is removed by expire")


class S3Reader:
    def __init__(self, store: S3Store, key: str, body):
        self.store, self.key, self.body = store, key, body

    def read(self, n: int) -> bytes:
        try:
            return self.body.read(n)
        except (BotoCoreError, OSError, ValueError) as exc:
            raise StoreError(self.store.name, f"cannot read s3://{self.store.bucket}/{self.key}: "
                             f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        try:
            self.body.close()
        except Exception:
            pass


class _Taken(Exception):
    """412 on a conditional write."""


class S3Store:

    def __init__(self, cfg: StoreConfig):
        self.cfg = cfg
        self.name = cfg.name
        self.bucket = cfg.bucket
        p = cfg.prefix.strip("/")
        self.prefix = p + "/" if p else ""
        self.location = location(cfg)
        self._keys = None
        if cfg.access_key_env:
            ak, sk = os.environ.get(cfg.access_key_env), os.environ.get(cfg.secret_key_env)
            for var, val in ((cfg.access_key_env, ak), (cfg.secret_key_env, sk)):
                if not val:
                    raise ConfigError(f"store {cfg.name!r}: {var} is not set (access_key_env/"
                                      f"secret_key_env name the variables holding the S3 keys)")
            self._keys = (ak, sk)
        self._client = None
        self._lock = threading.Lock()
        self._enforces: bool | None = None
        self._bucket_ok = False

    # ---------------------------------------------------------------- client
    def client(self):
        with self._lock:
            if self._client is None:
                cfg = self.cfg
                verify = cfg.ca_file or True if cfg.verify_tls else False
                conf = BotoConfig(
                    region_name=cfg.region, connect_timeout=cfg.timeout, read_timeout=cfg.timeout,
                    retries={"max_attempts": 1, "mode": "standard"},   # we retry (see _call)
                    s3={"addressing_style": cfg.addressing},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    max_pool_connections=16, tcp_keepalive=True)
                if not cfg.verify_tls:      # chosen in the config: no warning per request
                    import urllib3

                    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
                kw = {}
                if self._keys:
                    kw = {"aws_access_key_id": self._keys[0], "aws_secret_access_key": self._keys[1]}
                session = botocore.session.get_session()
                self._client = session.create_client(
                    "s3", endpoint_url=cfg.endpoint or None, verify=verify, config=conf, **kw)
            return self._client

    def _key(self, key: str) -> str:
        try:
            return self.prefix + check_key(key)
        except ValueError as exc:
            raise StoreError(self.name, str(exc)) from None

    def _put_extra(self) -> dict:
        """Storage class and SSE-KMS of a stored object."""
        extra = self._sse()
        if self.cfg.storage_class:
            extra["StorageClass"] = self.cfg.storage_class
        return extra

    def _sse(self) -> dict:
        """SSE-KMS, also for the short-lived claims and the probe: a bucket policy may
        refuse any PUT without it (they keep the bucket's storage class)."""
        if not self.cfg.sse_kms_key_id:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.cfg.sse_kms_key_id}

    def _where(self) -> str:
        return self.cfg.endpoint or f"AWS S3 ({self.cfg.region})"

    def _fatal(self, what: str, key: str, code: str, exc) -> StoreError:
        cfg = self.cfg
        creds = (f"${cfg.access_key_env}/${cfg.secret_key_env}" if cfg.access_key_env
                 else "the AWS credential chain")
        msg = exc.response.get("Error", {}).get("Message") or ""
        if cfg.sse_kms_key_id and (code.startswith("KMS.") or "kms" in msg.lower()):
            # RGW answers an unknown key id with InvalidAccessKeyId, AWS with
            # KMS.NotFoundException or AccessDenied naming kms: the key, not the credentials.
            return StoreError(self.name, f"cannot {what} s3://{self.bucket}/{key} at "
                              f"{self._where()}: the server refused SSE-KMS key "
                              f"{cfg.sse_kms_key_id!r} ({code}{': ' + msg if msg else ''}): "
                              f"check sse_kms_key_id, and that the credentials may use that key")
        if code in _AUTH_CODES:
            return StoreError(self.name, f"bucket {self.bucket!r} at {self._where()} refused the "
                              f"credentials ({code}): check the keys in {creds}")
        if code == "NoSuchBucket":
            return StoreError(self.name, f"bucket {self.bucket!r} does not exist at "
                              f"{self._where()}: create it, or fix `bucket` in the store's "
                              f"settings")
        if code in ("AccessDenied", "AllAccessDisabled", "403", "AccountProblem"):
            return StoreError(self.name, f"access denied to {what} s3://{self.bucket}/{key} at "
                              f"{self._where()} ({code}): grant the credentials in {creds} "
                              f"read, write, list and delete on bucket {self.bucket!r}")
        if code == "QuotaExceeded":
            return StoreError(self.name, f"cannot {what} s3://{self.bucket}/{key}: the quota is "
                              f"exceeded (QuotaExceeded); free space or raise the quota")
        return StoreError(self.name, f"cannot {what} s3://{self.bucket}/{key} at "
                          f"{self._where()}: {code}{': ' + msg if msg else ''}")

    def _call(self, what: str, key: str, fn, taken_ok: bool = False, attempts: int | None = None):
        """fn(client), retried on throttling, 5xx and dropped connections with backoff
        while attempts remain and within `timeout` seconds."""
        cfg = self.cfg
        attempts = attempts or cfg.retries
        deadline = time.monotonic() + cfg.timeout
        delay = 0.2
        for attempt in range(1, attempts + 1):
            try:
                return fn(self.client())
            except ClientError as exc:
                code, status = _code(exc), _status(exc)
                if status == 412 or code == "PreconditionFailed":
                    if taken_ok:
                        raise _Taken() from None
                    raise self._fatal(what, key, code, exc) from None
                if code in ("NoSuchKey", "404", "NotFound"):
                    raise ObjectNotFound(self.name, f"s3://{self.bucket}/{key} does not exist") \
                        from None
                if code == "NoSuchUpload":
                    raise StoreError(self.name, f"cannot {what} s3://{self.bucket}/{key}: the "
                                     f"upload is gone (NoSuchUpload)") from None
                transient = code in _TRANSIENT_CODES or status >= 500 or status == 429
                if not transient:
                    raise self._fatal(what, key, code, exc) from None
                reason = f"{code} (HTTP {status})"
            except NoCredentialsError:
                raise ConfigError(f"store {self.name!r}: no S3 credentials: set access_key_env/"
                                  f"secret_key_env, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                                  f"or an AWS profile") from None
            except (BotoConnectionError, HTTPClientError) as exc:
                if "SSL" in type(exc).__name__ or "CERTIFICATE" in str(exc):
                    raise StoreError(self.name, f"TLS with {self._where()} failed "
                                     f"({_tls_reason(exc)}): set ca_file to the CA bundle "
                                     f"that signed its certificate (or verify_tls = false "
                                     f"on a trusted network)") from None
                reason = _connection_reason(exc)
            except BotoCoreError as exc:
                raise StoreError(self.name, f"cannot {what} s3://{self.bucket}/{key}: "
                                 f"{type(exc).__name__}: {exc}") from None
            left = deadline - time.monotonic()
            if attempt == attempts or left <= delay:
                break
            log.debug(f"store {self.name}: {what} {key}: {reason}; retrying in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise StoreError(self.name, f"cannot {what} s3://{self.bucket}/{key} at {self._where()}"
                         f" (after {attempt} attempt{'s' if attempt > 1 else ''}): {reason}; "
                         f"check that the endpoint is up and reachable")

    def _check_bucket(self) -> None:
        """A HEAD answers 404 for a missing bucket as for a missing key: tell them apart
        once, so that an absent bucket is never "the object is absent"."""
        if self._bucket_ok:
            return
        try:
            self._call("look at", "", lambda c: c.head_bucket(Bucket=self.bucket))
        except ObjectNotFound:
            raise StoreError(self.name, f"bucket {self.bucket!r} does not exist at "
                             f"{self._where()}: create it, or fix `bucket` in the store's "
                             f"settings") from None
        self._bucket_ok = True

    def _head(self, full_key: str) -> dict | None:
        try:
            r = self._call("look at", full_key, lambda c: c.head_object(Bucket=self.bucket,
                                                                        Key=full_key))
        except ObjectNotFound:
            self._check_bucket()
            return None
        self._bucket_ok = True
        return r

    def _token_of(self, full_key: str) -> str | None:
        """The upload token of the object at full_key ("" for one written by someone
        else), None when there is none."""
        r = self._head(full_key)
        if r is None:
            return None
        return r.get("Metadata", {}).get(TOKEN_META, "")

    def _age(self, full_key: str) -> float | None:
        r = self._head(full_key)
        if r is None:
            return None
        return max(0.0, time.time() - r["LastModified"].timestamp())

    def enforces_conditions(self) -> bool:
        """Whether a PUT with If-None-Match: * is refused (412) when the key exists."""
        if self._enforces is None:
            key = self.prefix + PROBE_KEY
            result = None
            for _ in range(2):
                try:
                    self._call("probe", key, lambda c: c.put_object(
                        Bucket=self.bucket, Key=key, Body=b"walkeeper: does this bucket "
                        b"enforce If-None-Match?\n", IfNoneMatch="*", **self._sse()),
                        taken_ok=True)
                except _Taken:
                    result = True
                    break
            if result is None:
                result = False
                log.warn(f"store {self.name}: bucket {self.bucket!r} ignores If-None-Match "
                         f"(a versioned bucket, or a server without conditional writes); "
                         f"no-clobber falls back to look-then-write, which leaves a window "
                         f"of one request (docs/format.md)")
            self._enforces = result
        return self._enforces

    # ---------------------------------------------------------------- interface
    def begin_put(self, key: str) -> S3Upload:
        return S3Upload(self, key)

    def put_bytes(self, key: str, data: bytes) -> None:
        up = self.begin_put(key)
        up.write(data)
        up.commit()

    def _get(self, key: str, **kw):
        full = self._key(key)
        r = self._call("read", full, lambda c: c.get_object(Bucket=self.bucket, Key=full, **kw))
        self._bucket_ok = True
        return full, r

    def open(self, key: str) -> S3Reader:
        full, r = self._get(key)
        return S3Reader(self, full, r["Body"])

    def read_tail(self, key: str, n: int) -> bytes:
        if n <= 0:
            return b""
        try:
            full, r = self._get(key, Range=f"bytes=-{n}")
        except StoreError as exc:
            if "InvalidRange" not in str(exc):
                raise
            return b""          # an empty object
        reader = S3Reader(self, full, r["Body"])
        try:
            out = bytearray()
            while True:
                b = reader.read(1 << 20)
                if not b:
                    return bytes(out)
                out += b
        finally:
            reader.close()

    def exists(self, key: str) -> bool:
        return self._head(self._key(key)) is not None

    def list(self, prefix: str) -> list[Entry]:
        base = self._key(prefix).rstrip("/") + "/"
        out: list[Entry] = []
        token = None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": base, "Delimiter": "/"}
            if token:
                kw["ContinuationToken"] = token
            r = self._call("list", base, lambda c: c.list_objects_v2(**kw))
            for p in r.get("CommonPrefixes", []):
                name = p["Prefix"][len(base):].rstrip("/")
                if name:
                    out.append(Entry(name, 0, True, 0.0))
            for o in r.get("Contents", []):
                name = o["Key"][len(base):]
                if name and "/" not in name:
                    out.append(Entry(name, o["Size"], False, o["LastModified"].timestamp()))
            if not r.get("IsTruncated"):
                break
            token = r.get("NextContinuationToken")
        self._bucket_ok = True
        return out

    def delete(self, key: str) -> None:
        full = self._key(key)
        try:
            self._call("delete", full, lambda c: c.delete_object(Bucket=self.bucket, Key=full))
        except ObjectNotFound:
            pass

    def free_bytes(self) -> int | None:
        return None         # a bucket has no free space to report

    def abort_stale_uploads(self, prefix: str, before: float, dry_run: bool = False) -> list[str]:
        """Abort multipart uploads under `prefix` started before `before` (a Unix time)
        whose final key holds no object, and delete claims as old; return the keys.
        An upload whose key holds an object is kept: it may be the upload that made the
        object, and on RGW aborting it would destroy the object's data."""
        base = self._key(prefix).rstrip("/") + "/"
        done = []
        kw = {"Bucket": self.bucket, "Prefix": base}
        while True:
            r = self._call("list uploads under", base, lambda c: c.list_multipart_uploads(**kw))
            for u in r.get("Uploads", []):
                if u["Initiated"].timestamp() >= before:
                    continue
                key = u["Key"]
                if self._head(key) is not None:
                    log.warn(f"store {self.name}: keeping the incomplete upload "
                             f"{u['UploadId']} of {key}: the key holds an object")
                    continue
                try:
                    if not dry_run:
                        self._call("abort upload of", key, lambda c: c.abort_multipart_upload(
                            Bucket=self.bucket, Key=key, UploadId=u["UploadId"]))
                except StoreError as exc:
                    if "NoSuchUpload" not in str(exc):
                        raise
                done.append(key[len(self.prefix):])
            if not r.get("IsTruncated"):
                break
            kw["KeyMarker"] = r.get("NextKeyMarker")
            kw["UploadIdMarker"] = r.get("NextUploadIdMarker")
        token = None
        while True:
            kw2 = {"Bucket": self.bucket, "Prefix": base}
            if token:
                kw2["ContinuationToken"] = token
            r = self._call("list", base, lambda c: c.list_objects_v2(**kw2))
            for o in r.get("Contents", []):
                leaf = o["Key"].rsplit("/", 1)[-1]
                if leaf.startswith(CLAIM_PREFIX) and o["LastModified"].timestamp() < before:
                    if not dry_run:
                        self._call("delete", o["Key"], lambda c: c.delete_object(
                            Bucket=self.bucket, Key=o["Key"]))
                    done.append(o["Key"][len(self.prefix):])
            if not r.get("IsTruncated"):
                break
            token = r.get("NextContinuationToken")
        return done

    def close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass


assert is_temp(CLAIM_PREFIX + "x")      # claims are recognisable as temporary uploads
