"""Cipher suites end to end: an Envoy configured with `"suite": "chacha20-poly1305"` (suite
2) next to the session's default Envoy (AES-256-GCM, suite 1), same KEKs, same S3 server.
New objects get the configured suite; every reader follows the envelope, so either
deployment reads both suites; uploads and copies keep the suite they started with."""

import base64
import hashlib

import botocore.exceptions
import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

from stack import Redis
from test_e2e_multipart import MiB, PART_OVERHEAD, upload_parts
from test_e2e_objects import F, O, cipher_len, pattern, raw, read_all_or_error
from test_format_vectors import TRAILER_LEN, decrypt_stream, open_envelope, open_trailer, parse_envelope

CHACHA = {"suite": "chacha20-poly1305"}


@pytest.fixture(scope="module")
def chacha(stack):
    return stack.start_envoy(plugin_extra=CHACHA)


def envelope(stack, bucket, key):
    """The stored envelope's fields, from the backend directly."""
    meta = stack.backend_s3().head_object(Bucket=bucket, Key=key)["Metadata"]
    return dict(f.split("=", 1) for f in meta["s3crypt"].split(";"))


def get(s3, bucket, key, **kw):
    return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


@pytest.mark.parametrize("size", [0, 1, F + 1, 10 * MiB])
def test_chacha_round_trip_and_stored_ciphertext(stack, bucket, chacha, size):
    s3 = chacha.s3()
    data = pattern(size, seed=200 + size)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    g = s3.get_object(Bucket=bucket, Key="k")
    assert g["Body"].read() == data and g["ContentLength"] == size
    assert "s3crypt" not in g["Metadata"]
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == size
    env = envelope(stack, bucket, "k")
    assert env["v"] == "3" and env["s"] == "2" and env["t"] == "s" and env["l"] == str(size)
    stored, _ = raw(stack, bucket, "k")
    assert len(stored) == cipher_len(size)
    if size >= 64:  # (a shorter plaintext may occur in random bytes by chance)
        assert data[:64] not in stored and data[-64:] not in stored
    # The AES-configured Envoy reads it too (the envelope names the suite).
    assert get(stack.s3(), bucket, "k") == data


def test_chacha_object_decrypts_independently(stack, bucket, chacha):
    """What the filter writes in V8 is RFC 8439 ChaCha20-Poly1305 as docs/FORMAT.md
    specifies it: decrypted here with Python `cryptography` and the KEK."""
    data = pattern(2 * F + 5, seed=9)
    chacha.s3().put_object(Bucket=bucket, Key="i", Body=data)
    meta = stack.backend_s3().head_object(Bucket=bucket, Key="i")["Metadata"]
    env = parse_envelope(meta["s3crypt"])
    assert env["s"] == "2" and env["k"] == stack.key_id
    dek = aes_key_unwrap_with_padding(stack.kek, base64.b64decode(env["w"]))
    open_envelope(2, dek, env)  # raises if wrong
    stored, _ = raw(stack, bucket, "i")
    # Envelope version 3: the frames, then the sealed trailer (the plaintext MD5).
    assert env["v"] == "3"
    frames = stored[: len(stored) - TRAILER_LEN]
    assert decrypt_stream(2, dek, "single", 0, len(data), frames) == data
    assert open_trailer(2, dek, len(data), stored[len(frames):])["md5"] == hashlib.md5(data).hexdigest()


def test_chacha_ranged_reads(bucket, chacha):
    s3 = chacha.s3()
    data = pattern(3 * F + 10, seed=7)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    for spec, want in [
        ("bytes=0-0", data[:1]),
        (f"bytes={F - 5}-{F + 5}", data[F - 5:F + 6]),
        (f"bytes={2 * F}-", data[2 * F:]),
        ("bytes=-100", data[-100:]),
        (f"bytes=-{F + 20}", data[-(F + 20):]),
        (f"bytes=17-{3 * F + 9}", data[17:]),
    ]:
        r = s3.get_object(Bucket=bucket, Key="r", Range=spec)
        assert r["Body"].read() == want, spec
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={3 * F + 10}-")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


@pytest.mark.parametrize("where", ["first-frame", "last-frame", "tag"])
def test_chacha_flipped_stored_byte_fails(stack, bucket, chacha, where):
    s3 = chacha.s3()
    data = pattern(3 * F + 10, seed=8)
    s3.put_object(Bucket=bucket, Key="t", Body=data)
    pos = {"first-frame": 100, "last-frame": 3 * (F + O) + 13, "tag": F + O - 1}[where]
    def flip(b):
        b[pos] ^= 0x01
        return b

    stack.rewrite_stored(bucket, "t", flip)
    before = chacha.counter("s3crypt_integrity_failures")
    status, got, complete = read_all_or_error(chacha, bucket, "t")
    assert not complete
    assert data.startswith(got) and len(got) <= (pos // (F + O)) * F
    assert chacha.counter("s3crypt_integrity_failures") > before
    # Nor does the other deployment release it.
    status, got, complete = read_all_or_error(stack.main, bucket, "t")
    assert not complete and data.startswith(got)


def test_chacha_multipart(stack, bucket, chacha):
    s3 = chacha.s3()
    parts = {1: pattern(5 * MiB + 1, 31), 2: pattern(5 * MiB + 1, 32)}
    data = parts[1] + parts[2]
    upload_parts(s3, bucket, "mp", parts, metadata={"x": "y"})
    env = envelope(stack, bucket, "mp")
    assert env["s"] == "2" and env["t"] == "m"
    stored, _ = raw(stack, bucket, "mp")
    # Two parts of 5 MiB + 1 and the filter's end part (docs/FORMAT.md).
    assert len(stored) == len(data) + 3 * PART_OVERHEAD and stored[-PART_OVERHEAD:][:4] == b"s3cE"
    assert parts[1][:64] not in stored and parts[2][:64] not in stored
    for c in (s3, stack.s3()):
        g = c.get_object(Bucket=bucket, Key="mp")
        assert g["Body"].read() == data and g["Metadata"] == {"x": "y"}
        assert get(c, bucket, "mp", PartNumber=2) == parts[2]
        assert get(c, bucket, "mp", Range=f"bytes={5 * MiB - 3}-{5 * MiB + 70000}") == data[5 * MiB - 3:5 * MiB + 70001]
    assert s3.head_object(Bucket=bucket, Key="mp")["ContentLength"] == len(data)


def test_each_deployment_reads_the_others_objects(stack, bucket, chacha):
    aes, cc = stack.s3(), chacha.s3()
    objs = {}
    for name, client, suite in (("by-aes", aes, "1"), ("by-chacha", cc, "2")):
        for size in (0, 1000, 2 * F + 3):
            key = f"{name}-{size}"
            objs[key] = pattern(size, seed=size + len(name))
            client.put_object(Bucket=bucket, Key=key, Body=objs[key])
            assert envelope(stack, bucket, key)["s"] == suite
        key = f"{name}-mp"
        objs[key] = pattern(5 * MiB + 1, 40 + len(name)) + pattern(1234, 41)
        upload_parts(client, bucket, key, {1: objs[key][:5 * MiB + 1], 2: objs[key][5 * MiB + 1:]})
        assert envelope(stack, bucket, key)["s"] == suite
    for client in (aes, cc):
        for key, data in objs.items():
            assert get(client, bucket, key) == data, key
            if len(data) > 10:
                assert get(client, bucket, key, Range="bytes=5-9") == data[5:10], key
    # Listing sizes (multipart ones need ETags in listings, which s3s-fs leaves out).
    listed = {o["Key"]: o["Size"] for o in cc.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {k: v for k, v in listed.items() if not k.endswith("-mp")} == {
        k: len(v) for k, v in objs.items() if not k.endswith("-mp")}


def test_copies_keep_the_source_suite(stack, bucket, chacha):
    aes, cc = stack.s3(), chacha.s3()
    single = pattern(F + 99, 50)
    cc.put_object(Bucket=bucket, Key="src-cc", Body=single, Metadata={"a": "1"})
    mp = pattern(5 * MiB + 1, 51) + pattern(77, 52)
    upload_parts(aes, bucket, "src-aes-mp", {1: mp[:5 * MiB + 1], 2: mp[5 * MiB + 1:]})
    # Copied by the other deployment: the copy has the source's suite.
    aes.copy_object(Bucket=bucket, Key="c1", CopySource={"Bucket": bucket, "Key": "src-cc"})
    aes.copy_object(Bucket=bucket, Key="c2", CopySource={"Bucket": bucket, "Key": "src-cc"},
                    MetadataDirective="REPLACE", Metadata={"b": "2"})
    cc.copy_object(Bucket=bucket, Key="c3", CopySource={"Bucket": bucket, "Key": "src-aes-mp"})
    for key, suite, data in (("c1", "2", single), ("c2", "2", single), ("c3", "1", mp)):
        assert envelope(stack, bucket, key)["s"] == suite, key
        for c in (aes, cc):
            assert get(c, bucket, key) == data, key
    assert aes.get_object(Bucket=bucket, Key="c2")["Metadata"] == {"b": "2"}


@pytest.fixture(scope="module")
def mixed_replicas(stack, tmp_path_factory):
    """Two replicas sharing upload state in Redis, one per suite."""
    r = Redis(tmp_path_factory.mktemp("redis-suites"))
    try:
        yield stack.start_envoy(redis=r), stack.start_envoy(redis=r, plugin_extra=CHACHA)
    finally:
        r.stop()


@pytest.mark.parametrize("creator", ["aes", "chacha"])
def test_upload_parts_use_the_uploads_suite(stack, bucket, mixed_replicas, creator):
    """Parts go to the replica of the other suite: they are encrypted under the suite of
    the upload's envelope, not under that replica's configured suite."""
    a, c = mixed_replicas
    first, other = (a, c) if creator == "aes" else (c, a)
    s1, s2 = first.s3(), other.s3()
    parts = {1: pattern(5 * MiB + 1, 61), 2: pattern(5 * MiB + 1, 62), 3: pattern(999, 63)}
    data = b"".join(parts[n] for n in sorted(parts))
    uid = s1.create_multipart_upload(Bucket=bucket, Key="x")["UploadId"]
    etags = {n: (s2, s1)[n == 2].upload_part(Bucket=bucket, Key="x", UploadId=uid, PartNumber=n,
                                             Body=parts[n])["ETag"] for n in sorted(parts)}
    s2.complete_multipart_upload(Bucket=bucket, Key="x", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(parts)]})
    assert envelope(stack, bucket, "x")["s"] == ("1" if creator == "aes" else "2")
    for cl in (s1, s2, stack.s3()):
        assert get(cl, bucket, "x") == data
        assert get(cl, bucket, "x", PartNumber=1) == parts[1]
        assert get(cl, bucket, "x", Range=f"bytes={10 * MiB}-{10 * MiB + 10}") == data[10 * MiB:10 * MiB + 11]


def test_unknown_suite_fails_plugin_start(stack):
    with pytest.raises(RuntimeError) as e:  # Envoy exits: the plugin fails closed
        stack.start_envoy(plugin_extra={"suite": "aes-128-gcm"})
    assert 'suite "aes-128-gcm" is not supported' in str(e.value)
