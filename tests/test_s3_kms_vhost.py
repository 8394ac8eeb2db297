"""Two S3 settings on a real Ceph RGW: SSE-KMS (`sse_kms_key_id`, RGW's "testing" key
backend, tests/rgwharness.py) and virtual-hosted addressing (`addressing = "virtual"`,
buckets under rgw_dns_name, reached through radosgw's acceptance of absolute-form
requests since no resolver knows the name)."""

from __future__ import annotations

import pytest

from rgwharness import VHOST_DOMAIN
from storecontract import payload, read_all
from test_s3 import config, run_wk, s3_cfg
from walfiles import write_segment
from walkeeper.stores import open_store
from walkeeper.stores.s3_client import PART_SIZE

MARKER = b"SSE-KMS-PLAINTEXT-MARKER-9d2e"


def marked_segment(tmp_path, name):
    seg = write_segment(tmp_path, name, random=False)
    raw = bytearray(seg.read_bytes())
    for off in range(8192, len(raw), 1 << 20):
        raw[off:off + len(MARKER)] = MARKER
    seg.write_bytes(bytes(raw))
    return seg


@pytest.mark.slow
def test_sse_kms_encrypts_every_object_at_rest(rgw, bucket, tmp_path):
    env = rgw.credentials_env()
    # Control: the same segment without SSE is readable in RADOS, so the check sees plaintext.
    plain = rgw.new_bucket()
    try:
        cfg = config(tmp_path, rgw.store_toml(plain), name="plain.toml",
                     extra="[compression]\nalgorithm = \"none\"\n[fetch]\nprefetch = 0\n")
        name = "000000010000000000000001"
        seg = marked_segment(tmp_path, name)
        assert run_wk("--config", cfg, "push", seg, name, env=env).returncode == 0
        assert rgw.stored_data_contains(plain, MARKER)
    finally:
        rgw.empty_bucket(plain)

    cfg = config(tmp_path, rgw.store_toml(bucket, sse_kms_key_id="testkey-1"),
                 extra="[compression]\nalgorithm = \"none\"\n[fetch]\nprefetch = 0\n")
    r = run_wk("--config", cfg, "push", seg, name, env=env)
    assert r.returncode == 0, r.stderr
    # A multipart object (a base backup's size) through the same store.
    store = open_store(s3_cfg(rgw, bucket, prefix="", sse_kms_key_id="testkey-1"))
    data = bytearray(payload(2 * PART_SIZE + 12345, seed=3))
    for off in range(0, len(data) - len(MARKER), 1 << 20):
        data[off:off + len(MARKER)] = MARKER
    big = "s3c/backups/20260101T000000Z/base.tar.zst"
    up = store.begin_put(big)
    for i in range(0, len(data), 1 << 20):
        up.write(bytes(data[i:i + (1 << 20)]))
    up.commit()

    c = rgw.client()
    keys = rgw.keys(bucket)
    assert big in keys and any(name in k for k in keys)
    for key in keys:
        head = c.head_object(Bucket=bucket, Key=key)
        assert head.get("ServerSideEncryption") == "aws:kms", key
        assert head.get("SSEKMSKeyId") == "testkey-1", key
    assert not rgw.stored_data_contains(bucket, MARKER)
    # Read back through walkeeper: the server decrypts.
    dest = tmp_path / "RECOVERYXLOG"
    r = run_wk("--config", cfg, "fetch", name, dest, env=env)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == seg.read_bytes()
    assert read_all(store.open(big)) == bytes(data)
    store.close()


@pytest.mark.slow
def test_unknown_sse_kms_key_is_one_line_naming_the_key(rgw, bucket, tmp_path):
    env = rgw.credentials_env()
    cfg = config(tmp_path, rgw.store_toml(bucket, sse_kms_key_id="no-such-key"),
                 extra="[fetch]\nprefetch = 0\n")
    name = "000000010000000000000001"
    seg = write_segment(tmp_path, name)
    r = run_wk("--config", cfg, "push", seg, name, env=env, secrets=[rgw.secret_key])
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "SSE-KMS key 'no-such-key'" in line and "sse_kms_key_id" in line, r.stderr
    assert "objects" in line and bucket in line
    assert not rgw.keys(bucket, "s3c/wal/")


@pytest.mark.slow
def test_virtual_hosted_addressing(rgw, bucket, tmp_path):
    env = {**rgw.credentials_env(), **rgw.proxy_env()}
    stores = rgw.store_toml(bucket, addressing="virtual").replace(
        f'endpoint = "{rgw.endpoint}"', f'endpoint = "{rgw.vhost_endpoint}"')
    cfg = config(tmp_path, stores, extra="[fetch]\nprefetch = 0\n")
    names = ["000000010000000000000001", "000000010000000000000002"]
    segs = [write_segment(tmp_path, n) for n in names]
    for seg, n in zip(segs, names):
        r = run_wk("--config", cfg, "push", seg, n, env=env)
        assert r.returncode == 0, r.stderr
    dest = tmp_path / "RECOVERYXLOG"
    r = run_wk("--config", cfg, "fetch", names[1], dest, env=env)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == segs[1].read_bytes()
    r = run_wk("--config", cfg, "verify-chain", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # The requests named the bucket in the host, not in the path.
    seen = rgw.requests_log()
    assert f"http://{bucket}.{VHOST_DOMAIN}:" in seen
    assert f"{VHOST_DOMAIN}:{rgw.endpoint.rsplit(':', 1)[1]}/{bucket}/" not in seen
    assert len(rgw.keys(bucket, "s3c/wal/")) == 2
    # Without the route to that name the store is unreachable: fetch says it could not
    # answer, never "missing".
    alone = rgw.credentials_env()
    dest.unlink()
    r = run_wk("--config", cfg, "fetch", names[0], dest, env=alone, timeout=180)
    assert r.returncode >= 126 and "objects" in r.stderr, r.stderr
    assert not dest.exists()
