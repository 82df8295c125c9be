"""Read compatibility with the Python predecessor (plugin option `predecessor_read`): objects
it stored, written here straight into the backend by an independent implementation of its
format (tests/predecessor.py, from PREDECESSOR-FORMAT.md), are read through the filter with
the sizes and ETags the predecessor's clients saw, by whole reads, ranges and part numbers,
and listed with plaintext sizes and without its internal objects; every segment is verified
before any of it is released; tampered ones, stored or in their manifests, fail; nothing is
read so while the option is off; new writes are s3crypt's own."""

import hashlib
import os

import botocore.exceptions
import pytest
import requests

import predecessor as pred

KEY_STRING = "the predecessor's key string, any length"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def compat(stack):
    return stack.start_envoy(plugin_extra={"predecessor_read": {}}, extra_env={"S3PROXY_ENCRYPT_KEY": KEY_STRING})


def data_of(n, seed):
    return hashlib.shake_256(f"{seed}".encode()).digest(n)


@pytest.fixture
def objects(stack, bucket):
    """One object of each layout: single, streaming (3 backend parts), client multipart
    (client part 1 split into two backend parts, part 2 short)."""
    b = stack.backend_s3()
    single = data_of(300_000, "single")
    streaming = data_of(11 * MIB + 7, "streaming")
    parts = [data_of(10 * MIB + 3, "p1"), data_of(1234, "p2")]
    pred.put_single(b, bucket, "dir/single.bin", single, KEY_STRING, extra_metadata={"owner": "alice"},
                    content_type="text/plain")
    pred.put_streaming(b, bucket, "dir/streaming.bin", streaming, KEY_STRING, part_size=5 * MIB)
    pred.put_client_multipart(b, bucket, "dir/client.bin", parts, KEY_STRING, split=[[5 * MIB, 5 * MIB + 3], None])
    return {"dir/single.bin": single, "dir/streaming.bin": streaming, "dir/client.bin": b"".join(parts)}


def get_raw(envoy, bucket, key, **headers):
    url = envoy.s3().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    return requests.get(url, headers=headers, timeout=60)


def read_through(envoy, bucket, key, **headers):
    """Status, body, and whether the body came whole (a reset mid-body is not)."""
    url = envoy.s3().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    with requests.get(url, headers=headers, stream=True, timeout=60) as r:
        got = b""
        try:
            for chunk in r.iter_content(65536):
                got += chunk
            whole = len(got) == int(r.headers.get("content-length", -1))
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
            whole = False
        return r.status_code, got, whole


def test_whole_reads_heads_and_etags(compat, bucket, objects):
    s3 = compat.s3()
    for key, data in objects.items():
        g = s3.get_object(Bucket=bucket, Key=key)
        assert g["Body"].read() == data, key
        assert g["ContentLength"] == len(data)
        h = s3.head_object(Bucket=bucket, Key=key)
        assert h["ContentLength"] == len(data), key
        # The predecessor's own metadata never reaches clients.
        assert not {"isec", "client-etag", "plaintext-size"} & set(h["Metadata"]), h["Metadata"]
    # ETags as the predecessor showed them: the plaintext MD5 of a single object; the
    # backend's on GET and the MD5 of the decimal size on HEAD for a multipart one.
    md5 = hashlib.md5(objects["dir/single.bin"]).hexdigest()
    assert s3.head_object(Bucket=bucket, Key="dir/single.bin")["ETag"] == f'"{md5}"'
    assert s3.get_object(Bucket=bucket, Key="dir/single.bin")["ETag"] == f'"{md5}"'
    h = s3.head_object(Bucket=bucket, Key="dir/single.bin")
    assert h["Metadata"] == {"owner": "alice"} and h["ContentType"] == "text/plain"
    n = len(objects["dir/streaming.bin"])
    assert s3.head_object(Bucket=bucket, Key="dir/streaming.bin")["ETag"] == f'"{hashlib.md5(str(n).encode()).hexdigest()}"'
    backend = compat.stack.backend_s3().head_object(Bucket=bucket, Key="dir/streaming.bin")["ETag"]
    assert s3.get_object(Bucket=bucket, Key="dir/streaming.bin")["ETag"] == backend
    # Conditions compare with the ETag shown.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="dir/single.bin", IfNoneMatch=f'"{md5}"')
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    assert compat.counter("s3crypt_predecessor_served") >= 6


@pytest.mark.parametrize("key", ["dir/single.bin", "dir/streaming.bin", "dir/client.bin"])
def test_ranges(compat, bucket, objects, key):
    s3 = compat.s3()
    data = objects[key]
    n = len(data)
    for spec, (a, b) in [
        ("bytes=0-0", (0, 0)),
        ("bytes=1000-1999", (1000, 1999)),
        (f"bytes={5 * MIB - 10}-{5 * MIB + 10}", (5 * MIB - 10, 5 * MIB + 10)),  # across segments
        ("bytes=-100", (n - 100, n - 1)),
        (f"bytes={n - 5}-", (n - 5, n - 1)),
    ]:
        if a >= n:
            continue
        b = min(b, n - 1)
        g = s3.get_object(Bucket=bucket, Key=key, Range=spec)
        assert g["Body"].read() == data[a:b + 1], spec
        assert g["ContentRange"] == f"bytes {a}-{b}/{n}", spec
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={n}-")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_part_numbers(compat, bucket, objects):
    s3 = compat.s3()
    data = objects["dir/client.bin"]
    p1 = s3.get_object(Bucket=bucket, Key="dir/client.bin", PartNumber=1)
    assert p1["Body"].read() == data[:10 * MIB + 3] and p1["PartsCount"] == 2
    assert s3.get_object(Bucket=bucket, Key="dir/client.bin", PartNumber=2)["Body"].read() == data[10 * MIB + 3:]
    assert s3.head_object(Bucket=bucket, Key="dir/client.bin", PartNumber=2)["ContentLength"] == 1234
    assert s3.get_object(Bucket=bucket, Key="dir/single.bin", PartNumber=1)["Body"].read() == objects["dir/single.bin"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="dir/client.bin", PartNumber=3)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_listings_show_plaintext_sizes_and_hide_internal_objects(compat, bucket, objects):
    s3 = compat.s3()
    assert any(o["Key"].startswith(pred.INTERNAL_PREFIX)
               for o in compat.stack.backend_s3().list_objects_v2(Bucket=bucket)["Contents"])
    for listing in [s3.list_objects_v2(Bucket=bucket), s3.list_objects(Bucket=bucket)]:
        got = {o["Key"]: o["Size"] for o in listing["Contents"]}
        assert got == {k: len(v) for k, v in objects.items()}, got
    v2 = s3.list_objects_v2(Bucket=bucket)
    assert v2["KeyCount"] == 3
    etags = {o["Key"]: o["ETag"] for o in v2["Contents"]}
    assert etags["dir/single.bin"] == f'"{hashlib.md5(objects["dir/single.bin"]).hexdigest()}"'
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top.get("CommonPrefixes", [])] == ["dir/"]
    assert "Contents" not in top
    # A second listing is answered from the cache with the same sizes.
    again = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert again == {k: len(v) for k, v in objects.items()}


def test_internal_objects_are_not_reachable_through_the_filter(compat, bucket, objects):
    s3 = compat.s3()
    key = pred.manifest_key("dir/streaming.bin")
    for call in [lambda: s3.get_object(Bucket=bucket, Key=key),
                 lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"forged"),
                 lambda: s3.delete_object(Bucket=bucket, Key=key),
                 lambda: s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "x"}, {"Key": key}]}),
                 lambda: s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": key})]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert compat.stack.stored_exists(bucket, key)
    assert s3.get_object(Bucket=bucket, Key="dir/streaming.bin")["Body"].read() == objects["dir/streaming.bin"]


def flip(data, pos):
    b = bytearray(data)
    b[pos] ^= 1
    return bytes(b)


def test_tampered_single_object_releases_nothing(compat, bucket, objects):
    data = objects["dir/single.bin"]
    compat.stack.rewrite_stored(bucket, "dir/single.bin", lambda b: flip(b, 1000))
    status, got, whole = read_through(compat, bucket, "dir/single.bin")
    assert not whole and got == b"", (status, len(got))
    # A range inside the (one) segment fails too, before anything of it.
    status, got, whole = read_through(compat, bucket, "dir/single.bin", Range="bytes=0-99")
    assert not whole and data[:100] not in got


def test_tampered_multipart_object_releases_only_verified_segments(compat, bucket, objects):
    data = objects["dir/streaming.bin"]
    b = compat.stack.backend_s3()
    stored = b.get_object(Bucket=bucket, Key="dir/streaming.bin")["Body"].read()
    seg = 5 * MIB + pred.OVERHEAD
    # The provider flips a byte in the second segment (re-uploading the same parts).
    parts = [stored[:seg], flip(stored[seg:2 * seg], 77), stored[2 * seg:]]
    compat.stack.rewrite_stored_parts(bucket, "dir/streaming.bin", parts)
    status, got, whole = read_through(compat, bucket, "dir/streaming.bin")
    assert not whole and got == data[:5 * MIB], (status, len(got))


def test_tampered_manifests_fail_before_any_body(compat, bucket, objects):
    b = compat.stack.backend_s3()
    key = "dir/client.bin"
    mk = pred.manifest_key(key)
    doc = pred.decode_manifest(b.get_object(Bucket=bucket, Key=mk)["Body"].read())
    bad_size = dict(doc, ts=doc["ts"] + 1)
    other_key = dict(doc, dek=pred.wrap_dek(pred.kek("another key string"), os.urandom(32)))
    for forged in [bad_size, other_key]:
        b.put_object(Bucket=bucket, Key=mk, Body=pred.encode_manifest(forged))
        r = get_raw(compat, bucket, key)
        assert r.status_code == 500 and objects[key][:100] not in r.content, r.status_code
    b.put_object(Bucket=bucket, Key=mk, Body=b"not a manifest")
    assert get_raw(compat, bucket, key).status_code == 500
    # The object's wrapped key swapped for another object's: its segment does not verify.
    single_b = b.head_object(Bucket=bucket, Key="dir/single.bin")
    other = pred.put_single(b, bucket, "other.bin", b"x" * 5000, KEY_STRING)
    stored = b.get_object(Bucket=bucket, Key="dir/single.bin")["Body"].read()
    b.put_object(Bucket=bucket, Key="dir/single.bin", Body=stored,
                 Metadata=dict(single_b["Metadata"], isec=other["wrapped"]))
    status, got, whole = read_through(compat, bucket, "dir/single.bin")
    assert not whole and got == b""


def test_off_by_default_and_new_writes_are_s3crypt(stack, compat, bucket, objects):
    # The main Envoy has no predecessor_read: such objects are integrity errors there.
    r = get_raw(stack.main, bucket, "dir/single.bin")
    assert r.status_code == 500 and objects["dir/single.bin"][:100] not in r.content
    # Overwritten through the compatible filter: s3crypt's format, read as such although
    # the predecessor's manifest of the key is still there.
    s3 = compat.s3()
    s3.put_object(Bucket=bucket, Key="dir/streaming.bin", Body=b"new data")
    assert stack.stored_exists(bucket, pred.manifest_key("dir/streaming.bin"))
    head = stack.backend_s3().head_object(Bucket=bucket, Key="dir/streaming.bin")
    assert "s3crypt" in head["Metadata"] and "isec" not in head["Metadata"]
    assert s3.get_object(Bucket=bucket, Key="dir/streaming.bin")["Body"].read() == b"new data"
    assert stack.s3().get_object(Bucket=bucket, Key="dir/streaming.bin")["Body"].read() == b"new data"


def test_predecessor_read_needs_its_key(stack):
    with pytest.raises(Exception):
        stack.start_envoy(plugin_extra={"predecessor_read": {}})


def test_plaintext_objects_are_not_served_as_the_predecessors(compat, bucket):
    """An object with neither envelope, manifest nor `isec`: refused as before (no
    passthrough scope), and not retried forever."""
    compat.stack.backend_s3().put_object(Bucket=bucket, Key="plain", Body=b"an unencrypted body")
    for _ in range(2):
        r = get_raw(compat, bucket, "plain")
        assert r.status_code == 500 and b"unencrypted body" not in r.content, r.status_code
