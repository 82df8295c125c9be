"""Multipart ETags as S3 defines them, for the plaintext, through Envoy + s3crypt: each
UploadPart (and UploadPartCopy) answers the MD5 of the part's plaintext, ListParts lists
those, CompleteMultipartUpload takes them (and nothing else: InvalidPart) and the backend
still holds only ciphertext parts under its own ETags. The object's ETag is S3's
`md5-of-md5s-N` of the plaintext parts, sealed in the object, the same in every response
and in processes that never saw the upload. s3cmd, which compares every part's ETag with
the MD5 of what it sent, uploads a 20 MiB file (two parts) and reads it back."""

import hashlib
import shutil

import botocore.exceptions
import pytest

from stack import Redis
from test_e2e_clients import run, venv_bin
from test_e2e_objects import pattern

MiB = 1 << 20


def md5_etag(b):
    return '"%s"' % hashlib.md5(b).hexdigest()


def multipart_etag(parts):
    """S3's ETag of a multipart object: the MD5 of the parts' binary MD5s, `-` the count."""
    return '"%s-%d"' % (hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest(), len(parts))


def shows(s3, bucket, key, want, size, backend_etag):
    """Every read of the object through `s3` shows the ETag `want` and plaintext size."""
    head = s3.head_object(Bucket=bucket, Key=key)
    assert (head["ETag"], head["ContentLength"]) == (want, size)
    got = s3.get_object(Bucket=bucket, Key=key, IfMatch=want)
    assert got["ETag"] == want and len(got["Body"].read()) == size
    assert s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-9")["ETag"] == want
    assert s3.get_object(Bucket=bucket, Key=key, PartNumber=1)["ETag"] == want
    for bad in [backend_etag, md5_etag(b"other")]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_object(Bucket=bucket, Key=key, IfMatch=bad)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket=bucket, Key=key, IfNoneMatch=want)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    a = s3.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=["ETag", "ObjectSize"])
    assert (a["ETag"], a["ObjectSize"]) == (want.strip('"'), size)


@pytest.mark.parametrize("last", [1000, 5 * MiB + 7], ids=["closing-part", "end-part"])
def test_multipart_etag_is_md5_of_the_plaintext_part_md5s(stack, bucket, last):
    """A short last part is rewritten as a closing part, a long one is followed by an end
    part (the backend's ETag then counts 3 parts): either way the object seals its
    plaintext multipart ETag, which Complete answers, reads, listings, conditions,
    attributes and copies show, also in fresh processes (which read the object's last
    bytes once). The backend's ETag is that of the ciphertext, and no condition matches it."""
    s3 = stack.s3()
    parts = [pattern(5 * MiB + 1, 301), pattern(last, 302)]
    size = sum(map(len, parts))
    want = multipart_etag(parts)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    listed = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=n,
                                                       Body=body)["ETag"]} for n, body in enumerate(parts, 1)]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": listed})
    assert done["ETag"] == want
    backend = stack.backend_s3().head_object(Bucket=bucket, Key="mp")["ETag"]
    assert backend != want and backend.endswith("-3\"" if last > 5 * MiB else "-2\"")
    assert want.strip('"').split("-")[0] not in str(stack.backend_s3().head_object(Bucket=bucket, Key="mp"))
    shows(s3, bucket, "mp", want, size, backend)
    # The process that completed it lists it without reading it.
    before = stack.counter("s3crypt_listing_lookups")
    entry = s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert (entry["ETag"], entry["Size"]) == (want, size)
    assert stack.counter("s3crypt_listing_lookups") == before
    # A fresh process lists it first (one lookup of its last bytes), another reads it first.
    lister = stack.start_envoy()
    reader = stack.start_envoy()
    try:
        for fresh in (lister, reader):
            c = fresh.s3()
            if fresh is lister:
                entry = c.list_objects_v2(Bucket=bucket)["Contents"][0]
                assert (entry["ETag"], entry["Size"]) == (want, size)
                assert fresh.counter("s3crypt_listing_lookups") == 1
                c.list_objects_v2(Bucket=bucket)
                assert fresh.counter("s3crypt_listing_lookups") == 1  # known now
                v = c.list_object_versions(Bucket=bucket)["Versions"][0]
                assert (v["ETag"], v["Size"]) == (want, size)
            shows(c, bucket, "mp", want, size, backend)
        # A copy has the same parts, so the same ETag; its source conditions see it too.
        cp = reader.s3().copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "mp"},
                                     CopySourceIfMatch=want)
        assert cp["CopyObjectResult"]["ETag"] == want
        copy_backend = stack.backend_s3().head_object(Bucket=bucket, Key="copy")["ETag"]
        shows(lister.s3(), bucket, "copy", want, size, copy_backend)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            stack.start_envoy().s3().copy_object(Bucket=bucket, Key="copy2", CopySource={"Bucket": bucket, "Key": "mp"},
                                                  CopySourceIfMatch=backend)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    finally:
        for e in (lister, reader):
            e.stop()


def test_boto3_part_etags_list_parts_and_complete(stack, bucket):
    s3 = stack.s3()
    parts = {1: pattern(5 * MiB, 201), 2: pattern(5 * MiB + 3, 202), 3: pattern(1234, 203)}
    uid = s3.create_multipart_upload(Bucket=bucket, Key="ep")["UploadId"]
    etags = {}
    for n, body in parts.items():
        etags[n] = s3.upload_part(Bucket=bucket, Key="ep", UploadId=uid, PartNumber=n, Body=body)["ETag"]
        assert etags[n] == md5_etag(body), n
    # Part 2 again with other content: its new ETag replaces the old one.
    old2 = etags[2]
    parts[2] = pattern(5 * MiB + 3, 204)
    etags[2] = s3.upload_part(Bucket=bucket, Key="ep", UploadId=uid, PartNumber=2, Body=parts[2])["ETag"]
    assert etags[2] == md5_etag(parts[2]) != old2
    listed = s3.list_parts(Bucket=bucket, Key="ep", UploadId=uid)["Parts"]
    # (Some backends list parts in no particular order.)
    assert sorted((p["PartNumber"], p["Size"], p["ETag"]) for p in listed) == \
        [(n, len(parts[n]), etags[n]) for n in sorted(parts)]
    # The backend knows the parts by other ETags (its ciphertext's; s3s-fs lists none)
    # and stored sizes.
    raw = stack.backend_s3().list_parts(Bucket=bucket, Key="ep", UploadId=uid)["Parts"]
    assert {p["PartNumber"] for p in raw} == {1, 2, 3}
    assert all(p["Size"] > len(parts[p["PartNumber"]]) for p in raw)
    backend = {p["PartNumber"]: p["ETag"] for p in raw if "ETag" in p}
    assert all(backend[n] != etags[n] for n in backend)
    # The earlier ETag of part 2, a made-up one, or the backend's: InvalidPart, and the
    # upload stays.
    for wrong in [old2, md5_etag(b"made up")] + ([backend[2]] if 2 in backend else []):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.complete_multipart_upload(Bucket=bucket, Key="ep", UploadId=uid, MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": wrong if n == 2 else etags[n]} for n in sorted(parts)]})
        assert e.value.response["Error"]["Code"] == "InvalidPart"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Part 1 uploaded again with the same content: the same ETag names its newest upload.
    assert s3.upload_part(Bucket=bucket, Key="ep", UploadId=uid, PartNumber=1, Body=parts[1])["ETag"] == etags[1]
    s3.complete_multipart_upload(Bucket=bucket, Key="ep", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(parts)]})
    data = b"".join(parts[n] for n in sorted(parts))
    assert s3.get_object(Bucket=bucket, Key="ep")["Body"].read() == data
    stored = stack.backend_s3().get_object(Bucket=bucket, Key="ep")["Body"].read()
    assert parts[1][:4096] not in stored


def test_upload_part_copy_etag_is_the_copied_plaintext_md5(stack, bucket):
    s3 = stack.s3()
    src = pattern(6 * MiB, 205)
    s3.put_object(Bucket=bucket, Key="pcsrc", Body=src)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="pc")["UploadId"]
    r1 = s3.upload_part_copy(Bucket=bucket, Key="pc", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "pcsrc"}, CopySourceRange=f"bytes=0-{5 * MiB - 1}")
    r2 = s3.upload_part(Bucket=bucket, Key="pc", UploadId=uid, PartNumber=2, Body=src[:777])
    e1 = r1["CopyPartResult"]["ETag"]
    assert e1 == md5_etag(src[:5 * MiB])
    assert r2["ETag"] == md5_etag(src[:777])
    s3.complete_multipart_upload(Bucket=bucket, Key="pc", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": r2["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="pc")["Body"].read() == src[:5 * MiB] + src[:777]


def test_redis_mode_part_etags_across_replicas(stack, bucket, tmp_path_factory):
    redis = Redis(tmp_path_factory.mktemp("redis-etags"))
    try:
        a, b = stack.start_envoy(redis=redis), stack.start_envoy(redis=redis)
        sa, sb = a.s3(), b.s3()
        parts = {1: pattern(5 * MiB + 1, 206), 2: pattern(4321, 207)}
        uid = sa.create_multipart_upload(Bucket=bucket, Key="rp")["UploadId"]
        e1 = sa.upload_part(Bucket=bucket, Key="rp", UploadId=uid, PartNumber=1, Body=parts[1])["ETag"]
        e2 = sb.upload_part(Bucket=bucket, Key="rp", UploadId=uid, PartNumber=2, Body=parts[2])["ETag"]
        assert (e1, e2) == (md5_etag(parts[1]), md5_etag(parts[2]))
        # Redis holds the entries, the plaintext MD5s sealed.
        keys = redis.command("KEYS", "s3crypt:parts:*")["KEYS"]
        assert len(keys) == 1
        assert 0 < redis.command("TTL", keys[0])["TTL"]
        entries = redis.command("HGETALL", keys[0])["HGETALL"]
        dump = str(entries)
        assert set(entries) == {"1", "2"} if isinstance(entries, dict) else len(entries) == 4
        for p in parts.values():
            assert hashlib.md5(p).hexdigest() not in dump.lower()
        listed = sa.list_parts(Bucket=bucket, Key="rp", UploadId=uid)["Parts"]
        assert sorted((p["PartNumber"], p["ETag"]) for p in listed) == [(1, e1), (2, e2)]
        sb.complete_multipart_upload(Bucket=bucket, Key="rp", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
        assert redis.command("KEYS", "s3crypt:parts:*")["KEYS"] == []
        assert sa.get_object(Bucket=bucket, Key="rp")["Body"].read() == parts[1] + parts[2]
    finally:
        redis.stop()


@pytest.mark.skipif(shutil.which(venv_bin("s3cmd")) is None and shutil.which("s3cmd") is None,
                    reason="s3cmd is not installed")
def test_s3cmd_multipart_put_get_20mib(stack, bucket, tmp_path):
    host = stack.endpoint.removeprefix("http://")
    cfg = tmp_path / "s3cfg"
    cfg.write_text(
        f"[default]\naccess_key = {stack.client_creds[0]}\nsecret_key = {stack.client_creds[1]}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\n"
        "bucket_location = us-east-1\ncheck_ssl_certificate = False\n"
    )
    exe = venv_bin("s3cmd") if shutil.which(venv_bin("s3cmd")) else shutil.which("s3cmd")
    s3cmd = [exe, "-c", str(cfg)]
    data = pattern(20 * MiB, seed=208)
    (tmp_path / "big.bin").write_bytes(data)
    # Above s3cmd's 15 MiB multipart threshold: two parts, each ETag compared with the
    # MD5 of what s3cmd sent (a mismatch makes it retry, then give up).
    out = run(s3cmd + ["put", str(tmp_path / "big.bin"), f"s3://{bucket}/big.bin"], stack.client_env())
    assert "MD5 Sums don't match" not in out and "Retrying" not in out
    run(s3cmd + ["get", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin")], stack.client_env())
    assert (tmp_path / "back.bin").read_bytes() == data
    # (Listing sizes of multipart objects need the backend to list ETags; s3s-fs does not.)
    assert f"s3://{bucket}/big.bin" in run(s3cmd + ["ls", f"s3://{bucket}/"], stack.client_env())
