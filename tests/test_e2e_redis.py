"""Redis mode: two Envoy instances (two "replicas") share multipart upload state in a real
redis-server through a real webdis, on the session's real S3 server."""

import threading
import time

import botocore.exceptions
import pytest

from stack import Redis
from test_e2e_multipart import MiB
from test_e2e_objects import pattern


@pytest.fixture(scope="module")
def redis(stack, tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("redis"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def replicas(stack, redis):
    # A short call-out timeout so that an unresponsive Redis is noticed quickly.
    extra = {"redis_timeout_ms": 500}
    return stack.start_envoy(redis=redis, plugin_extra=extra), stack.start_envoy(redis=redis, plugin_extra=extra)


def mpu_keys(redis):
    return redis.command("KEYS", "s3crypt:mpu:*")["KEYS"]


def test_parts_spread_over_two_replicas(stack, bucket, redis, replicas):
    a, b = replicas
    sa, sb = a.s3(), b.s3()
    parts = {n: pattern(5 * MiB + n, 60 + n) for n in range(1, 7)}
    parts[7] = pattern(12345, 67)
    data = b"".join(parts[n] for n in sorted(parts))
    uid = sa.create_multipart_upload(Bucket=bucket, Key="rep", Metadata={"m": "1"})["UploadId"]
    # The record is in Redis (with a TTL) before the client has the UploadId.
    keys = mpu_keys(redis)
    assert len(keys) == 1
    ttl = redis.command("TTL", keys[0])["TTL"]
    assert 0 < ttl <= 7 * 24 * 3600
    etags, errors = {}, []

    def one(n):
        try:
            c = (sa, sb)[n % 2]
            etags[n] = c.upload_part(Bucket=bucket, Key="rep", UploadId=uid, PartNumber=n, Body=parts[n])["ETag"]
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=one, args=(n,)) for n in (7, 4, 1, 6, 3, 2, 5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    sizes = {p["PartNumber"]: p["Size"] for p in sb.list_parts(Bucket=bucket, Key="rep", UploadId=uid)["Parts"]}
    assert sizes == {n: len(p) for n, p in parts.items()}
    sb.complete_multipart_upload(Bucket=bucket, Key="rep", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(parts)]})
    assert mpu_keys(redis) == []  # cleaned up once the backend completed it
    for c in (sa, sb, stack.s3()):
        g = c.get_object(Bucket=bucket, Key="rep")
        assert g["Metadata"] == {"m": "1"} and g["Body"].read() == data
        assert c.get_object(Bucket=bucket, Key="rep", PartNumber=7)["Body"].read() == parts[7]
        r = c.get_object(Bucket=bucket, Key="rep", Range=f"bytes={5 * MiB - 3}-{10 * MiB + 20}")
        assert r["Body"].read() == data[5 * MiB - 3:10 * MiB + 21]
    # Completed objects never need Redis.
    redis.stop_redis()
    try:
        assert sb.get_object(Bucket=bucket, Key="rep")["Body"].read() == data
    finally:
        redis.start_redis()


def test_complete_on_a_replica_that_never_saw_the_upload(stack, bucket, redis, replicas):
    """Create and parts on one replica, Complete on the other: that replica reads the
    upload's record from Redis to write the end marker (the last part is 5 MiB, so it can
    be followed), and the object ends with its authenticated end part."""
    from test_e2e_multipart import PART_OVERHEAD

    a, b = replicas
    sa = a.s3()
    parts = {1: pattern(5 * MiB + 7, 70), 2: pattern(5 * MiB, 71)}
    uid = sa.create_multipart_upload(Bucket=bucket, Key="far")["UploadId"]
    etags = {n: sa.upload_part(Bucket=bucket, Key="far", UploadId=uid, PartNumber=n, Body=p)["ETag"]
             for n, p in parts.items()}
    b.restart()  # no cached record on b
    sb = b.s3()
    sb.complete_multipart_upload(Bucket=bucket, Key="far", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(parts)]})
    stored = stack.stored(bucket, "far")
    assert len(stored) == sum(map(len, parts.values())) + 3 * PART_OVERHEAD
    assert stored[-PART_OVERHEAD:][:8] == b"s3cE" + (3).to_bytes(4, "big")  # the end part
    data = parts[1] + parts[2]
    for c in (sa, sb):
        assert c.get_object(Bucket=bucket, Key="far")["Body"].read() == data
        g = c.get_object(Bucket=bucket, Key="far", PartNumber=2)
        assert g["Body"].read() == parts[2] and g["PartsCount"] == 2
        with pytest.raises(botocore.exceptions.ClientError):
            c.get_object(Bucket=bucket, Key="far", PartNumber=3)


def test_short_last_part_staged_in_redis_closes_the_object_on_another_replica(stack, bucket, redis, replicas):
    """The short last part goes through one replica, which stages its ciphertext in Redis
    (never plaintext); Complete on the other replica reads it from there and rewrites the
    last part as a closing part (docs/FORMAT.md), so that the first ranged read finds the
    part table in one request. Complete removes the staged copy."""
    from test_e2e_multipart import PART_OVERHEAD, backend_requests

    a, b = replicas
    sa = a.s3()
    parts = {1: pattern(5 * MiB + 7, 72), 2: pattern(123_457, 73)}
    uid = sa.create_multipart_upload(Bucket=bucket, Key="closing")["UploadId"]
    etags = {n: sa.upload_part(Bucket=bucket, Key="closing", UploadId=uid, PartNumber=n, Body=p)["ETag"]
             for n, p in parts.items()}
    [key] = redis.command("KEYS", "s3crypt:stage:*")["KEYS"]
    staged = redis.command("GET", key)["GET"]
    assert staged.startswith("s3crypt-staged-part 1\n")
    assert parts[2][:64] not in staged.encode() and parts[2][:64].hex() not in staged
    b.restart()  # no cached record on b
    sb = b.s3()
    sb.complete_multipart_upload(Bucket=bucket, Key="closing", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(parts)]})
    assert redis.command("KEYS", "s3crypt:stage:*")["KEYS"] == [] and mpu_keys(redis) == []
    stored = stack.stored(bucket, "closing")
    at = len(parts[1]) + PART_OVERHEAD
    assert len(stored) == at + len(parts[2]) + PART_OVERHEAD  # listing sizes unchanged
    assert stored[at:at + 8] == b"s3cC" + (2).to_bytes(4, "big")
    data = parts[1] + parts[2]
    before = backend_requests(a)
    r = sa.get_object(Bucket=bucket, Key="closing", Range="bytes=-10")
    assert r["Body"].read() == data[-10:]
    assert backend_requests(a) - before == 1 + 1 + 1  # HEAD, the table, the data
    assert sb.get_object(Bucket=bucket, Key="closing")["Body"].read() == data


def test_redis_down_gives_503_and_retry_succeeds(stack, bucket, redis, replicas):
    a, b = replicas
    sa, sb = a.s3(), b.s3()
    committed = pattern(300_000, 70)
    sa.put_object(Bucket=bucket, Key="committed", Body=committed)
    uid = sa.create_multipart_upload(Bucket=bucket, Key="down")["UploadId"]
    p1, p2 = pattern(5 * MiB, 71), pattern(3 * MiB, 72)
    e1 = sa.upload_part(Bucket=bucket, Key="down", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    redis.stop_redis()
    try:
        # b has never seen this upload: its record must come from Redis, which is down.
        t0 = time.time()
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sb.upload_part(Bucket=bucket, Key="down", UploadId=uid, PartNumber=2, Body=p2)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert e.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert time.time() - t0 < 10
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sb.create_multipart_upload(Bucket=bucket, Key="down2")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        # Nothing was half-written: part 2 is not in the upload. (ListParts through the
        # filter needs the part ETags from Redis: 503 too; the backend says.)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sa.list_parts(Bucket=bucket, Key="down", UploadId=uid)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        listed = stack.backend_s3().list_parts(Bucket=bucket, Key="down", UploadId=uid)["Parts"]
        assert [p["PartNumber"] for p in listed] == [1]
        # Single-object PUT/GET do not need Redis.
        sb.put_object(Bucket=bucket, Key="single", Body=b"still works")
        assert sb.get_object(Bucket=bucket, Key="single")["Body"].read() == b"still works"
        assert sb.get_object(Bucket=bucket, Key="committed")["Body"].read() == committed
    finally:
        redis.start_redis()
    # Redis is back (its data persisted): the client's retry succeeds.
    deadline = time.time() + 20
    while True:
        try:
            e2 = sb.upload_part(Bucket=bucket, Key="down", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
            break
        except botocore.exceptions.ClientError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    sb.complete_multipart_upload(Bucket=bucket, Key="down", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert sa.get_object(Bucket=bucket, Key="down")["Body"].read() == p1 + p2


def test_unresponsive_redis_times_out_with_503(stack, bucket, redis, replicas):
    a, b = replicas
    uid = a.s3().create_multipart_upload(Bucket=bucket, Key="slow")["UploadId"]
    redis.pause()
    try:
        t0 = time.time()
        with pytest.raises(botocore.exceptions.ClientError) as e:
            b.s3().upload_part(Bucket=bucket, Key="slow", UploadId=uid, PartNumber=1, Body=b"x" * 1000)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert time.time() - t0 < 10
    finally:
        redis.resume()
    a.s3().abort_multipart_upload(Bucket=bucket, Key="slow", UploadId=uid)


def test_envoy_restart_between_parts(stack, bucket, redis, replicas):
    a, _ = replicas
    uid = a.s3().create_multipart_upload(Bucket=bucket, Key="rs")["UploadId"]
    p1, p2 = pattern(5 * MiB, 80), pattern(100_000, 81)
    e1 = a.s3().upload_part(Bucket=bucket, Key="rs", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    a.restart()  # shared data (the per-pod cache) is gone; the record is in Redis
    s = a.s3()
    e2 = s.upload_part(Bucket=bucket, Key="rs", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    s.complete_multipart_upload(Bucket=bucket, Key="rs", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert s.get_object(Bucket=bucket, Key="rs")["Body"].read() == p1 + p2


def test_abort_removes_record(stack, bucket, redis, replicas):
    a, b = replicas
    uid = a.s3().create_multipart_upload(Bucket=bucket, Key="ab")["UploadId"]
    assert len(mpu_keys(redis)) >= 1
    b.s3().abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=uid)
    assert mpu_keys(redis) == []
    with pytest.raises(botocore.exceptions.ClientError) as e:
        b.s3().upload_part(Bucket=bucket, Key="ab", UploadId=uid, PartNumber=1, Body=b"x")
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    # Replica a may still hold the record in its cache until the TTL: the backend, which
    # no longer has the upload, refuses the part (s3s-fs answers AccessDenied, S3 NoSuchUpload).
    with pytest.raises(botocore.exceptions.ClientError) as e:
        a.s3().upload_part(Bucket=bucket, Key="ab", UploadId=uid, PartNumber=1, Body=b"x")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (403, 404)


def test_transfer_manager_through_redis_mode(stack, bucket, redis, replicas, tmp_path):
    from boto3.s3.transfer import TransferConfig

    a, _ = replicas
    data = pattern(11 * MiB + 7, 90)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    s = a.s3()
    s.upload_file(str(f), bucket, "tm", Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB + 1))
    assert s.get_object(Bucket=bucket, Key="tm")["Body"].read() == data
    assert mpu_keys(redis) == []


def test_upload_part_copy_on_another_replica(stack, bucket, redis, replicas):
    """UploadPartCopy finds the upload's data key in Redis on a replica that has not seen
    the upload, and answers 503 while Redis is down."""
    a, b = replicas
    sa, sb = a.s3(), b.s3()
    src = pattern(5 * MiB + 77, 70)
    sa.put_object(Bucket=bucket, Key="src", Body=src)
    uid = sa.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    redis.stop_redis()
    try:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sb.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1,
                                CopySource={"Bucket": bucket, "Key": "src"})
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    finally:
        redis.start_redis()
    e1 = sb.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src"})["CopyPartResult"]["ETag"]
    e2 = sa.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=2,
                             CopySource={"Bucket": bucket, "Key": "src"},
                             CopySourceRange="bytes=10-99")["CopyPartResult"]["ETag"]
    sb.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert sa.get_object(Bucket=bucket, Key="dst")["Body"].read() == src + src[10:100]


def test_forged_and_swapped_records_are_refused(stack, bucket, redis, replicas):
    """Whoever can write Redis cannot point an upload at another object's envelope: a
    record swapped in from another upload, a record rewritten without the KEK (other
    object, other envelope) and an unauthenticated version 1 record are all refused by a
    replica that reads them (404 NoSuchUpload), and nothing is stored."""
    import hashlib

    a, b = replicas
    sa = a.s3()
    victim = sa.create_multipart_upload(Bucket=bucket, Key="victim")["UploadId"]
    mine = sa.create_multipart_upload(Bucket=bucket, Key="mine")["UploadId"]
    rkey = lambda uid: "s3crypt:mpu:" + hashlib.sha256(uid.encode()).hexdigest()[:40]  # noqa: E731
    victim_rec = redis.command("GET", rkey(victim))["GET"]
    mine_rec = redis.command("GET", rkey(mine))["GET"]
    assert victim_rec.startswith("2\n") and mine_rec.startswith("2\n")
    key_id, created, obj, env, mac = mine_rec.split("\n")[1:]
    v_env = victim_rec.split("\n")[4]
    forged = [
        victim_rec,  # swapped in from the victim's upload
        "\n".join(["2", key_id, created, obj, v_env, mac]),  # another envelope, old MAC
        "\n".join(["2", key_id, str(int(created) + 1), obj, env, mac]),  # another time
        "\n".join(["1", created, obj, v_env]),  # version 1: no MAC
    ]
    for n, rec in enumerate(forged):
        # A fresh replica has no cached copy: it reads what is in Redis.
        fresh = stack.start_envoy(redis=redis)
        redis.command("SET", rkey(mine), rec)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            fresh.s3().upload_part(Bucket=bucket, Key="mine", UploadId=mine, PartNumber=1, Body=b"chosen")
        assert e.value.response["Error"]["Code"] == "NoSuchUpload", n
        assert fresh.counter("s3crypt_integrity_failures") >= 1
        fresh.stop()
    assert sa.list_parts(Bucket=bucket, Key="mine", UploadId=mine).get("Parts", []) == []
    # The genuine record still works.
    redis.command("SET", rkey(mine), mine_rec)
    fresh = stack.start_envoy(redis=redis)
    fresh.s3().upload_part(Bucket=bucket, Key="mine", UploadId=mine, PartNumber=1, Body=b"genuine")
    fresh.stop()
    for uid, key in ((victim, "victim"), (mine, "mine")):
        sa.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)


def test_abort_of_another_key_on_a_replica_without_the_record(stack, bucket, redis, replicas):
    """A replica that never saw the upload reads its record from Redis before an abort: the
    right UploadId with another key is refused (404) and the backend is not asked (s3s-fs
    would abort by UploadId alone), so the upload goes on; the right key aborts."""
    a, _ = replicas
    uid = a.s3().create_multipart_upload(Bucket=bucket, Key="mine")["UploadId"]
    fresh = stack.start_envoy(redis=redis)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fresh.s3().abort_multipart_upload(Bucket=bucket, Key="other", UploadId=uid)
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    p = a.s3().upload_part(Bucket=bucket, Key="mine", UploadId=uid, PartNumber=1, Body=b"still here")
    fresh.stop()
    fresh = stack.start_envoy(redis=redis)
    fresh.s3().abort_multipart_upload(Bucket=bucket, Key="mine", UploadId=uid)
    fresh.stop()
    assert "ETag" in p
    # Aborted for real: the record is gone from Redis, and the backend refuses the upload
    # (s3s-fs answers 403 for an aborted upload, S3 404).
    import hashlib
    assert "s3crypt:mpu:" + hashlib.sha256(uid.encode()).hexdigest()[:40] not in mpu_keys(redis)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        a.s3().upload_part(Bucket=bucket, Key="mine", UploadId=uid, PartNumber=2, Body=b"too late")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (403, 404)


def test_upload_part_sent_in_one_go_waits_for_its_record(stack, bucket, redis, replicas):
    """UploadPart with headers and body sent together (no `Expect: 100-continue`): the part
    body arrives while the filter's headers still wait for the upload record from Redis.
    The part is encrypted and completes like any other."""
    import hashlib  # noqa: PLC0415
    import os  # noqa: PLC0415

    import s3util  # noqa: PLC0415

    a, b = replicas
    uid = a.s3().create_multipart_upload(Bucket=bucket, Key="one-go")["UploadId"]
    part = os.urandom(5 * MiB + 7)
    signer = s3util.Signer(*stack.client_creds)
    status, headers, text = s3util.signed_request(b.endpoint, signer, "PUT", f"/{bucket}/one-go",
                                                  params=[("partNumber", "1"), ("uploadId", uid)], body=part)
    assert status == 200, text
    assert headers["etag"] == '"%s"' % hashlib.md5(part).hexdigest()
    a.s3().complete_multipart_upload(Bucket=bucket, Key="one-go", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": headers["etag"]}]})
    assert b.s3().get_object(Bucket=bucket, Key="one-go")["Body"].read() == part
