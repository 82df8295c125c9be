"""End to end: real clients -> real Envoy with the s3crypt wasm filter -> real S3 server
(s3s-fs, which verifies SigV4). The backend is also read directly, to see what it stores."""

import base64
import hashlib
import os
import re
import threading
import time
import urllib.parse

import botocore.exceptions
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
import pytest
import requests

import s3util
import stack as stack_mod
from test_format_vectors import TRAILER_LEN, decrypt_stream, open_trailer, parse_envelope

F = 65536
O = 28


def cipher_len(p):
    """Stored length of a single object (envelope version 3: frames, then the trailer)."""
    return p + O * (-(-p // F)) + (TRAILER_LEN if p else 0)


def pattern(n, seed=0):
    """Deterministic, non-repeating-looking bytes (not compressible, not all one value)."""
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest() * 64
        block += 1
    return bytes(out[:n])


def raw(stack, bucket, key):
    """What the backend stores (read directly from the S3 server)."""
    r = stack.backend_s3().get_object(Bucket=bucket, Key=key)
    return r["Body"].read(), r


@pytest.mark.parametrize("size", [0, 1, F - 1, F, F + 1, 10 << 20, 100 << 20])
def test_round_trip_sizes_and_backend_holds_ciphertext(stack, bucket, size):
    s3 = stack.s3()
    data = pattern(size, seed=size)
    key = f"obj-{size}"
    put = s3.put_object(Bucket=bucket, Key=key, Body=data)
    assert put["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    got = s3.get_object(Bucket=bucket, Key=key)
    body = got["Body"].read()
    assert body == data
    assert got["ContentLength"] == size
    stored, meta = raw(stack, bucket, key)
    assert len(stored) == cipher_len(size)
    if size >= 16:  # shorter plaintext could appear in random ciphertext by chance
        assert data[:64] not in stored
    # What the backend holds is docs/FORMAT.md: decrypted here independently with the KEK.
    env = parse_envelope(meta["Metadata"]["s3crypt"])
    dek = aes_key_unwrap_with_padding(stack.kek, base64.b64decode(env["w"]))
    frames = stored[: len(stored) - TRAILER_LEN] if size else stored
    assert decrypt_stream(int(env["s"]), dek, "single", 0, size, frames) == data
    if size:
        assert open_trailer(int(env["s"]), dek, size, stored[len(frames):])["md5"] == hashlib.md5(data).hexdigest()
    assert "s3crypt" in meta["Metadata"]
    assert "s3crypt" not in got["Metadata"]
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == size
    assert "s3crypt" not in head["Metadata"]


def test_ranges_every_form(stack, bucket):
    s3 = stack.s3()
    size = 10 * F + 100
    data = pattern(size, seed=7)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    cases = [(0, 0), (0, 9), (F - 1, F), (F - 5, 2 * F + 5), (3 * F, 3 * F + 99), (size - 1, size - 1), (10, size + 1000)]
    for a, b in cases:
        r = s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={a}-{b}")
        assert r["Body"].read() == data[a:b + 1], (a, b)
        assert r["ContentRange"] == f"bytes {a}-{min(b, size - 1)}/{size}"
        assert r["ContentLength"] == min(b, size - 1) - a + 1
    for a in [0, 5, F, F + 3, size - 1]:
        r = s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={a}-")
        assert r["Body"].read() == data[a:], a
        assert r["ContentRange"] == f"bytes {a}-{size - 1}/{size}"
    # Suffix ranges are widened to whole frames; s3s-fs answers 500 when a suffix is
    # longer than the stored object (it seeks before the start of the file, where S3
    # clamps), so the suffixes here stay below the object size minus two frames.
    for n in [1, 100, F, F + 1, 2 * F + 50, 7 * F]:
        r = s3.get_object(Bucket=bucket, Key="r", Range=f"bytes=-{n}")
        assert r["Body"].read() == data[-n:], n
        assert r["ContentRange"] == f"bytes {max(0, size - n)}-{size - 1}/{size}"
    for bad in [f"bytes={size}-", f"bytes={size + 10}-{size + 20}"]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_object(Bucket=bucket, Key="r", Range=bad)
        assert e.value.response["Error"]["Code"] == "InvalidRange"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_range_on_empty_object_is_416(stack, bucket):
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="empty", Range="bytes=0-")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def read_all_or_error(envoy, bucket, key, **params):
    """GET through `envoy` (an Envoy or the stack: its main Envoy) with a raw HTTP client:
    (status, bytes received, completed). `params`: more GetObject parameters (PartNumber).
    A 503 SlowDown is retried once, as every SDK does: a process that last saw another
    version of the object (the provider rewrote it) answers the first read so, with no
    body, and reads the new version's trailer on the retry."""
    r = _read_once(envoy, bucket, key, **params)
    if r[0] == 503 and b"<Code>SlowDown</Code>" in r[1]:
        r = _read_once(envoy, bucket, key, **params)
    return r


def _read_once(envoy, bucket, key, **params):
    url = envoy.s3().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key, **params},
                                            ExpiresIn=300)
    try:
        with requests.get(url, stream=True, timeout=30) as r:
            got = b""
            try:
                for chunk in r.iter_content(65536):
                    got += chunk
                complete = "content-length" in r.headers and len(got) == int(r.headers["content-length"])
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
                complete = False
            return r.status_code, got, complete
    except requests.exceptions.ConnectionError:
        return None, b"", False


def _tamper_file(stack, bucket, key, fn):
    stack.rewrite_stored(bucket, key, fn)


@pytest.mark.parametrize("where", ["first-frame", "last-frame", "tag"])
def test_flipped_byte_releases_no_unauthenticated_plaintext(stack, bucket, where):
    s3 = stack.s3()
    data = pattern(3 * F + 10, seed=3)
    s3.put_object(Bucket=bucket, Key="t", Body=data)
    pos = {"first-frame": 100, "last-frame": 3 * (F + O) + 13, "tag": F + O - 1}[where]

    def flip(b):
        b[pos] ^= 0x01
        return b

    _tamper_file(stack, bucket, "t", flip)
    status, got, complete = read_all_or_error(stack, bucket, "t")
    assert not complete
    # Whatever arrived is a prefix of the true plaintext made of whole verified frames
    # that precede the damaged one.
    assert data.startswith(got)
    bad_frame = pos // (F + O)
    assert len(got) <= bad_frame * F
    assert stack.counter("s3crypt_integrity_failures") >= 1


def test_truncated_object_fails(stack, bucket):
    s3 = stack.s3()
    data = pattern(2 * F + 10, seed=4)
    s3.put_object(Bucket=bucket, Key="t", Body=data)
    _tamper_file(stack, bucket, "t", lambda b: b[: F + O])  # exactly one whole frame left
    status, got, complete = read_all_or_error(stack, bucket, "t")
    # The stored size no longer matches the envelope: refused before any body is sent.
    assert status == 500 and b"failed integrity verification" in got
    assert data[:100] not in got


def test_swapped_bodies_fail(stack, bucket):
    s3 = stack.s3()
    a, b = pattern(5000, seed=10), pattern(5000, seed=11)
    s3.put_object(Bucket=bucket, Key="a", Body=a)
    s3.put_object(Bucket=bucket, Key="b", Body=b)
    da, db = stack.stored(bucket, "a"), stack.stored(bucket, "b")
    stack.rewrite_stored(bucket, "a", lambda _: db)
    stack.rewrite_stored(bucket, "b", lambda _: da)
    for key in ["a", "b"]:
        status, got, complete = read_all_or_error(stack, bucket, key)
        # Refused before any byte (the trailer is read before the GET goes upstream: a
        # 500 integrity error), or cut off with nothing released.
        assert (status == 500 and b"integrity verification" in got) or (not complete and got == b""), \
            (key, status, got[:200])
        assert a[:64] not in got and b[:64] not in got


def test_wrong_or_missing_key_fails_clearly(stack, bucket):
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="k", Body=b"secret payload")
    # Same key id, other key material.
    other = stack.start_envoy(keks={stack.key_id: os.urandom(32)})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        other.s3().get_object(Bucket=bucket, Key="k")["Body"].read()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "could not be unwrapped" in e.value.response["Error"]["Message"]
    # The key id is not configured at all.
    missing = stack.start_envoy(keks={"another-key": os.urandom(32)})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        missing.s3().get_object(Bucket=bucket, Key="k")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert stack.key_id in e.value.response["Error"]["Message"]
    # A KEK rotation: new writes use the new active key, old objects stay readable.
    rotated = stack.start_envoy(keks={stack.key_id: stack.kek, "next": os.urandom(32)}, active="next")
    assert rotated.s3().get_object(Bucket=bucket, Key="k")["Body"].read() == b"secret payload"
    rotated.s3().put_object(Bucket=bucket, Key="k2", Body=b"new")
    _, meta = raw(stack, bucket, "k2")
    assert "k=next;" in meta["Metadata"]["s3crypt"]


def test_listing_sizes_are_plaintext_sizes(stack, bucket):
    s3 = stack.s3()
    sizes = {"a/1": 0, "a/2": 1, "a/3": F, "b/4": F + 1, "b/c/5": 300000, "top": 12345}
    for k, n in sizes.items():
        s3.put_object(Bucket=bucket, Key=k, Body=pattern(n, seed=n))
    v2 = s3.list_objects_v2(Bucket=bucket)
    assert {o["Key"]: o["Size"] for o in v2["Contents"]} == sizes
    v1 = s3.list_objects(Bucket=bucket)
    assert {o["Key"]: o["Size"] for o in v1["Contents"]} == sizes
    d = s3.list_objects_v2(Bucket=bucket, Delimiter="/", Prefix="b/")
    assert {o["Key"]: o["Size"] for o in d["Contents"]} == {"b/4": F + 1}
    assert [p["Prefix"] for p in d["CommonPrefixes"]] == ["b/c/"]
    seen = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}):
        seen.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    assert seen == sizes
    seen = {}
    for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}):
        seen.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    assert seen == sizes


def test_metadata_and_standard_headers_round_trip(stack, bucket):
    s3 = stack.s3()
    s3.put_object(
        Bucket=bucket, Key="m", Body=b"hello",
        Metadata={"owner": "alice", "purpose": "test"},
        ContentType="text/plain", CacheControl="max-age=60", ContentDisposition="attachment; filename=m.txt",
        ContentLanguage="de", ContentEncoding="identity",
    )
    h = s3.head_object(Bucket=bucket, Key="m")
    assert h["Metadata"] == {"owner": "alice", "purpose": "test"}
    assert h["ContentType"] == "text/plain"
    assert h["CacheControl"] == "max-age=60"
    assert h["ContentDisposition"] == "attachment; filename=m.txt"
    assert h["ContentLanguage"] == "de"
    g = s3.get_object(Bucket=bucket, Key="m", ResponseContentType="application/x-test")
    assert g["ContentType"] == "application/x-test"
    assert g["Body"].read() == b"hello"


def test_client_cannot_forge_the_envelope(stack, bucket):
    """The envelope's name is reserved: a client that sends it is refused (it used to be
    dropped silently), and nothing is stored."""
    s3 = stack.s3()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="f", Body=b"x" * 10, Metadata={"s3crypt": "v=1;forged"})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    assert "Contents" not in stack.backend_s3().list_objects_v2(Bucket=bucket)


def test_etag_and_conditional_requests(stack, bucket):
    s3 = stack.s3()
    data = b"conditional"
    md5 = hashlib.md5(data).hexdigest()
    s3.put_object(Bucket=bucket, Key="c", Body=data, ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode())
    h = s3.head_object(Bucket=bucket, Key="c")
    assert h["ETag"] == f'"{md5}"'
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=h["ETag"])["Body"].read() == data
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=h["ETag"])
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_bad_digests_store_nothing(stack, bucket):
    s3 = stack.s3()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="d1", Body=b"abc" * 1000, ContentMD5=base64.b64encode(hashlib.md5(b"other").digest()).decode())
    assert e.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="d2", Body=b"abc" * 1000, ChecksumCRC32="AAAAAA==")
    assert e.value.response["Error"]["Code"] == "BadDigest"
    # A body that does not match its signed x-amz-content-sha256.
    signer = s3util.Signer(*stack.client_creds)
    host = urllib.parse.urlparse(stack.endpoint).netloc
    body = b"z" * 200000
    h, *_ = signer.sign("PUT", host, f"/{bucket}/d3", headers={"content-length": str(len(body))},
                        payload_hash=hashlib.sha256(b"not the body").hexdigest())
    r = requests.put(f"{stack.endpoint}/{bucket}/d3", data=body, headers=h, timeout=30)
    assert r.status_code == 400 and b"XAmzContentSHA256Mismatch" in r.content
    time.sleep(0.5)
    keys = [o["Key"] for o in stack.backend_s3().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not {"d1", "d2", "d3"} & set(keys)


def test_aws_chunked_signed_and_trailers(stack, bucket):
    signer = s3util.Signer(*stack.client_creds)
    s3 = stack.s3()
    data = pattern(3 * F + 777, seed=21)
    r = s3util.put_chunked(stack.endpoint, signer, bucket, "sc", data, mode="signed", chunk=F)
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"%s"' % hashlib.md5(data).hexdigest()
    assert s3.get_object(Bucket=bucket, Key="sc")["Body"].read() == data
    r = s3util.put_chunked(stack.endpoint, signer, bucket, "sc-bad", data, mode="signed", chunk=F, corrupt_chunk=1)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    r = s3util.put_chunked(stack.endpoint, signer, bucket, "tr", data, mode="trailer", chunk=10000)
    assert r.status_code == 200, r.text
    assert r.headers.get("x-amz-checksum-crc32") == s3util.crc32_b64(data)
    assert s3.get_object(Bucket=bucket, Key="tr")["Body"].read() == data
    r = s3util.put_chunked(stack.endpoint, signer, bucket, "tr-bad", data, mode="trailer", chunk=10000, trailer="AAAAAA==")
    assert r.status_code == 400 and b"BadDigest" in r.content
    time.sleep(0.5)
    keys = [o["Key"] for o in stack.backend_s3().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert "sc-bad" not in keys and "tr-bad" not in keys


def test_signatures_are_verified(stack, bucket):
    ak, sk = stack.client_creds
    bad = stack.s3(secret="wrong" + sk)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.put_object(Bucket=bucket, Key="x", Body=b"data")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    unknown = stack.s3(access_key="AKIDUNKNOWN0000", secret=sk)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown.list_objects_v2(Bucket=bucket)
    assert e.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    r = requests.get(f"{stack.endpoint}/{bucket}/x", timeout=10)
    assert r.status_code == 403
    # Presigned URLs: valid, expired, tampered.
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="p", Body=b"presigned body")
    signer = s3util.Signer(ak, sk)
    host = urllib.parse.urlparse(stack.endpoint).netloc
    q = signer.presign("GET", host, f"/{bucket}/p", expires=60)
    r = requests.get(f"{stack.endpoint}/{bucket}/p?{q}", timeout=10)
    assert r.status_code == 200 and r.content == b"presigned body"
    import datetime
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
    q = signer.presign("GET", host, f"/{bucket}/p", expires=60, now=past)
    r = requests.get(f"{stack.endpoint}/{bucket}/p?{q}", timeout=10)
    assert r.status_code == 403 and b"AccessDenied" in r.content
    q = signer.presign("GET", host, f"/{bucket}/p", expires=60)
    r = requests.get(f"{stack.endpoint}/{bucket}/p?{q.replace('X-Amz-Expires=60', 'X-Amz-Expires=61')}", timeout=10)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pp"}, ExpiresIn=60)
    assert requests.put(url, data=b"via presigned put", timeout=10).status_code == 200
    assert s3.get_object(Bucket=bucket, Key="pp")["Body"].read() == b"via presigned put"
    assert stack.counter("s3crypt_auth_failures") >= 3


def test_copy_object_copy_and_replace(stack, bucket):
    s3 = stack.s3()
    data = pattern(2 * F + 3, seed=30)
    s3.put_object(Bucket=bucket, Key="src", Body=data, Metadata={"a": "1"})
    s3.copy_object(Bucket=bucket, Key="dst-copy", CopySource={"Bucket": bucket, "Key": "src"})
    g = s3.get_object(Bucket=bucket, Key="dst-copy")
    assert g["Body"].read() == data and g["Metadata"] == {"a": "1"}
    # ETag conditions on the source compare with the ETag clients see on HEAD.
    md5 = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    s3.copy_object(Bucket=bucket, Key="dst-if", CopySource={"Bucket": bucket, "Key": "src"}, CopySourceIfMatch=md5)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="dst-if2", CopySource={"Bucket": bucket, "Key": "src"}, CopySourceIfNoneMatch=md5)
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    s3.copy_object(Bucket=bucket, Key="dst-repl", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"b": "2"}, ContentType="text/x-new")
    g = s3.get_object(Bucket=bucket, Key="dst-repl")
    assert g["Body"].read() == data and g["Metadata"] == {"b": "2"} and g["ContentType"] == "text/x-new"
    stored, meta = raw(stack, bucket, "dst-repl")
    assert len(stored) == cipher_len(len(data)) and "s3crypt" in meta["Metadata"]
    assert s3.head_object(Bucket=bucket, Key="dst-repl")["ContentLength"] == len(data)


def test_delete_and_delete_objects(stack, bucket):
    s3 = stack.s3()
    for k in ["d1", "d2", "d3"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    s3.delete_object(Bucket=bucket, Key="d1")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "d2"}, {"Key": "d3"}]})
    assert {d["Key"] for d in r["Deleted"]} == {"d2", "d3"}
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_unencrypted_objects_pass_through(stack, bucket):
    """Objects without an envelope are served only inside a configured passthrough scope
    (test_e2e_provider.py shows they are integrity errors everywhere else)."""
    data = pattern(3 * F + 5, seed=40)
    stack.backend_s3().put_object(Bucket=bucket, Key="plain", Body=data, Metadata={"x": "y"})
    scoped = stack.start_envoy(plugin_extra={"passthrough_unencrypted": [bucket]})
    s3 = scoped.s3()
    g = s3.get_object(Bucket=bucket, Key="plain")
    assert g["Body"].read() == data and g["Metadata"] == {"x": "y"}
    for rng, want in [("bytes=5-9", data[5:10]), ("bytes=70000-", data[70000:]), ("bytes=-3", data[-3:]), (f"bytes={F - 2}-{F + 2}", data[F - 2:F + 3])]:
        assert s3.get_object(Bucket=bucket, Key="plain", Range=rng)["Body"].read() == want, rng
    assert scoped.counter("s3crypt_plaintext_served") >= 5
    scoped.stop()


def test_healthz_answers_during_large_upload(stack, bucket):
    s3 = stack.s3()
    data = pattern(200 << 20, seed=50)
    done = threading.Event()
    err = []

    def upload():
        try:
            s3.put_object(Bucket=bucket, Key="big", Body=data)
        except Exception as e:  # noqa: BLE001
            err.append(e)
        finally:
            done.set()

    t = threading.Thread(target=upload)
    t.start()
    answered = 0
    while not done.is_set():
        r = requests.get(stack.endpoint + "/healthz", timeout=5)
        assert r.status_code == 200
        answered += 1
        time.sleep(0.02)
    t.join()
    assert not err, err
    assert answered >= 5, "the upload finished before /healthz could be probed during it"
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == len(data)


def test_prometheus_counters(stack, bucket):
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="m", Body=b"abc")
    s3.get_object(Bucket=bucket, Key="m")["Body"].read()
    text = requests.get(stack.admin_url + "/stats/prometheus", timeout=5).text
    for name in ["s3crypt_objects_encrypted", "s3crypt_bytes_encrypted", "s3crypt_objects_decrypted", "s3crypt_auth_failures", "s3crypt_integrity_failures"]:
        assert name in text, name
    assert stack.counter("s3crypt_objects_encrypted") >= 1
    assert stack.counter("s3crypt_bytes_decrypted") >= 3
    if stack_mod.BUILD == "native":
        # No wasm VMs, no linear memory to report.
        assert "s3crypt_wasm_memory_bytes" not in text
        return
    # Linear memory of the filter's VMs (one per worker, 2 here), summed: whole wasm pages.
    assert re.search(r"# TYPE \S*s3crypt_wasm_memory_bytes gauge", text), text[:2000]
    mem = stack.counter("s3crypt_wasm_memory_bytes")
    assert mem >= 2 * 65536 and mem % 65536 == 0 and mem < 1 << 30, mem
