"""The S3 store type (AWS S3, Ceph RGW, MinIO...): its settings and how to open one.
The client (botocore) lives in s3_client.py and is imported only when the store is first
used: config loading reads this declaration on every push and fetch, and importing
botocore and building a client costs a process 0.2-0.35 s."""

from __future__ import annotations

from walkeeper.errors import ConfigError
from walkeeper.settings import Setting
from walkeeper.stores.registry import StoreType


def _open(cfg):
    from walkeeper.stores.s3_client import S3Store

    return S3Store(cfg)


def _location(cfg) -> str:
    prefix = cfg.prefix.strip("/")
    where = f"s3://{cfg.bucket}/{prefix + '/' if prefix else ''}"
    return f"{where} at {cfg.endpoint}" if cfg.endpoint else f"{where} (AWS {cfg.region})"


def _validate(values: dict, where: str) -> None:
    bucket = values.get("bucket", "")
    if not 3 <= len(bucket) <= 63 or "/" in bucket or bucket != bucket.strip():
        raise ConfigError(f"{where}.bucket: {bucket!r} is not an S3 bucket name (3-63 "
                          f"characters, no '/')")
    endpoint = values.get("endpoint", "")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.endpoint: {endpoint!r} must start with https:// or http://")
    if bool(values.get("access_key_env")) != bool(values.get("secret_key_env")):
        raise ConfigError(f"{where}: set both access_key_env and secret_key_env, or neither "
                          f"(the standard AWS credential chain)")
    prefix = values.get("prefix", "")
    if prefix and any(p in (".", "..") for p in prefix.strip("/").split("/")):
        raise ConfigError(f"{where}.prefix: {prefix!r} must not hold '.' or '..' parts")


STORE_TYPE = StoreType(
    name="s3",
    factory=_open,
    settings=(
        Setting("store.endpoint", str, "", "s3: endpoint URL (https://host:port); empty: AWS S3 "
                "for `region`"),
        Setting("store.region", str, "us-east-1", "s3: region (SigV4 signing; AWS endpoint)"),
        Setting("store.bucket", str, None, "s3: bucket (must exist)"),
        Setting("store.prefix", str, "", "s3: key prefix inside the bucket (\"\" = none); the "
                "store's layout starts under it"),
        Setting("store.addressing", str, "path", "s3: path (https://host/bucket/key) or virtual "
                "(https://bucket.host/key) addressing", choices=("path", "virtual")),
        Setting("store.access_key_env", str, "", "s3: variable holding the access key id; "
                "both key variables empty: the standard AWS chain (AWS_* variables, "
                "~/.aws, instance role)"),
        Setting("store.secret_key_env", str, "", "s3: variable holding the secret access key"),
        Setting("store.ca_file", str, "", "s3: CA bundle for a private endpoint's certificate"),
        Setting("store.verify_tls", bool, True, "s3: verify the endpoint's TLS certificate"),
        Setting("store.storage_class", str, "", "s3: storage class of new objects (e.g. "
                "STANDARD_IA); \"\" = the bucket's default"),
        Setting("store.sse_kms_key_id", str, "", "s3: SSE-KMS key id for new objects; \"\" = none"),
        Setting("store.timeout", int, 60, "s3: seconds for connect and each read; also the "
                "time within which throttling and 5xx are retried", minimum=1),
        Setting("store.retries", int, 5, "s3: attempts per request on throttling, 5xx and "
                "dropped connections, with backoff", minimum=1, maximum=20),
    ),
    required=("bucket",),
    env=lambda cfg: (cfg.access_key_env, cfg.secret_key_env),
    location=_location,
    # one botocore client is thread-safe (its connection pool serves every thread), and
    # opening the store creates no thread and no connection
    shared=True,
    fix=lambda cfg: (f"check that bucket {cfg.bucket!r} exists at "
                     f"{cfg.endpoint or 'AWS S3 ' + cfg.region}, that the endpoint answers, "
                     f"and that the credentials"
                     + (f" in ${cfg.access_key_env}/${cfg.secret_key_env}"
                        if cfg.access_key_env else " of the AWS chain")
                     + " may read, write, list and delete in it"),
    validate=_validate,
)
