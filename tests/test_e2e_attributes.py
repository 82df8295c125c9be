"""End to end through the real Envoy: GetObjectAttributes answered by the filter
(plaintext sizes, the client's parts, checksum, the ETag HEAD shows), conditional writes
(refused by default; `conditional_writes: backend` checks If-Match against the visible
ETag), and the backend's server-side encryption under s3crypt's (SSE-C: skipped when the
backend does not enforce it). Stored bytes are read through `stack.backend_s3()`."""

import base64
import hashlib
import os

import botocore.exceptions
import pytest

import s3util

MIB = 1 << 20
ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_get_object_attributes_single(stack, bucket):
    s3 = stack.s3()
    data = os.urandom(200_000)
    s3.put_object(Bucket=bucket, Key="a", Body=data, ChecksumAlgorithm="CRC32")
    head = s3.head_object(Bucket=bucket, Key="a")
    r = s3.get_object_attributes(Bucket=bucket, Key="a", ObjectAttributes=ALL)
    assert r["ObjectSize"] == len(data)
    assert r["ETag"] == head["ETag"].strip('"')
    assert r["StorageClass"] == "STANDARD"
    # The client's full-object CRC32 (computed here independently), sealed by the filter.
    import zlib
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert s3.head_object(Bucket=bucket, Key="a", ChecksumMode="ENABLED").get("ChecksumCRC32") == crc
    assert r["Checksum"]["ChecksumCRC32"] == crc
    assert "ObjectParts" not in r
    # The backend holds more (the ciphertext): the answer is not the backend's.
    stored = stack.backend_s3().head_object(Bucket=bucket, Key="a")["ContentLength"]
    assert stored > len(data)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object_attributes(Bucket=bucket, Key="missing", ObjectAttributes=["ObjectSize"])
    assert code(e) == ("NoSuchKey", 404)


def test_get_object_attributes_multipart_parts(stack, bucket):
    s3 = stack.s3()
    parts = [os.urandom(5 * MIB + 11), os.urandom(5 * MIB + 13), os.urandom(777)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="m")
    done = []
    for n, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key="m", UploadId=up["UploadId"], PartNumber=n, Body=p)
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": done})
    head = s3.head_object(Bucket=bucket, Key="m")
    r = s3.get_object_attributes(Bucket=bucket, Key="m", ObjectAttributes=ALL)
    assert r["ObjectSize"] == sum(map(len, parts)) == head["ContentLength"]
    assert r["ETag"] == head["ETag"].strip('"')
    op = r["ObjectParts"]
    assert op["TotalPartsCount"] == 3
    assert [(p["PartNumber"], p["Size"]) for p in op["Parts"]] == [(i + 1, len(p)) for i, p in enumerate(parts)]
    assert op["IsTruncated"] is False
    page = s3.get_object_attributes(Bucket=bucket, Key="m", ObjectAttributes=["ObjectParts"],
                                    MaxParts=1, PartNumberMarker=1)["ObjectParts"]
    assert [(p["PartNumber"], p["Size"]) for p in page["Parts"]] == [(2, len(parts[1]))]
    assert page["IsTruncated"] is True and int(page["NextPartNumberMarker"]) == 2


def test_conditional_writes_refused_by_default(stack, bucket):
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="k", Body=b"original")
    etag = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    for kw in ({"IfNoneMatch": "*"}, {"IfMatch": etag}):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_object(Bucket=bucket, Key="k", Body=b"overwritten", **kw)
        assert code(e) == ("NotImplemented", 501)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"original"
    # CompleteMultipartUpload and CopyObject with conditions: refused too, before anything
    # is written (the upload stays open and completes without them).
    uid = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="m", UploadId=uid, PartNumber=1, Body=b"part")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": e1}]}
    for kw in ({"IfNoneMatch": "*"}, {"IfMatch": etag}):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=uid, MultipartUpload=parts, **kw)
        assert code(e) == ("NotImplemented", 501)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "k"}, **kw)
        assert code(e) == ("NotImplemented", 501)
    assert "Contents" not in stack.backend_s3().list_objects_v2(Bucket=bucket, Prefix="c")
    s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=uid, MultipartUpload=parts)
    assert s3.get_object(Bucket=bucket, Key="m")["Body"].read() == b"part"


def test_conditional_writes_backend_mode_if_match(stack, bucket):
    envoy = stack.start_envoy(plugin_extra={"conditional_writes": "backend"})
    s3 = envoy.s3()
    data = b"version one"
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    s3.put_object(Bucket=bucket, Key="k", Body=data, ContentMD5=md5)
    visible = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    assert visible == '"%s"' % hashlib.md5(data).hexdigest()
    backend = stack.backend_s3().head_object(Bucket=bucket, Key="k")["ETag"]
    # A stale ETag, and the backend's own (no client sees it): 412, nothing written.
    for bad in ('"%s"' % hashlib.md5(b"other").hexdigest(), backend):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch=bad)
        assert code(e) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == data
    # The visible ETag: the write goes through (upstream as If-Match: <backend ETag>).
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch=visible)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="nothing-here", Body=b"x", IfMatch=visible)
    assert code(e) == ("NoSuchKey", 404)


def test_if_match_put_sent_in_one_go_waits_for_its_lookup(stack, bucket):
    """Headers and body sent together (no `Expect: 100-continue`): the body arrives while the
    filter's headers still wait for their HEAD call-out. Nothing of the request may pass
    (or be refused) before that lookup decided: the right ETag writes, a stale one is 412
    and writes nothing."""
    envoy = stack.start_envoy(plugin_extra={"conditional_writes": "backend"})
    s3 = envoy.s3()
    s3.put_object(Bucket=bucket, Key="k", Body=b"version one")
    visible = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    signer = s3util.Signer(*stack.client_creds)
    body = os.urandom(200_000)
    stale = '"%s"' % hashlib.md5(b"other").hexdigest()
    status, _, _ = s3util.signed_request(envoy.endpoint, signer, "PUT", f"/{bucket}/k", headers={"if-match": stale},
                                         body=body)
    assert status == 412
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"version one"
    status, _, text = s3util.signed_request(envoy.endpoint, signer, "PUT", f"/{bucket}/k",
                                            headers={"if-match": visible}, body=body)
    assert status == 200, text
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body


def test_if_match_in_a_fresh_process_reads_the_etag_from_the_trailer(stack, bucket):
    """No Content-MD5: the object's MD5 (its ETag) is sealed in its trailer. A process that
    never saw the object reads the trailer after its HEAD, so the PUT's own ETag matches
    (with a cold cache it used to be compared with the backend's ETag: 412)."""
    etag = stack.s3().put_object(Bucket=bucket, Key="t", Body=b"version one")["ETag"]
    assert etag == '"%s"' % hashlib.md5(b"version one").hexdigest()
    fresh = stack.start_envoy(plugin_extra={"conditional_writes": "backend"})
    fresh.s3().put_object(Bucket=bucket, Key="t", Body=b"v2", IfMatch=etag)
    assert stack.s3().get_object(Bucket=bucket, Key="t")["Body"].read() == b"v2"
    other = stack.start_envoy(plugin_extra={"conditional_writes": "backend"})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        other.s3().put_object(Bucket=bucket, Key="t", Body=b"v3", IfMatch=etag)
    assert code(e) == ("PreconditionFailed", 412)
    a = stack.start_envoy().s3().get_object_attributes(Bucket=bucket, Key="t", ObjectAttributes=["ETag"])
    assert a["ETag"].strip('"') == hashlib.md5(b"v2").hexdigest()
    for e in (fresh, other):
        e.stop()


def test_sse_kms_under_s3crypt(stack, bucket):
    """The backend's SSE-KMS (RGW's testing key store, scripts/rgw.sh) under s3crypt's
    encryption: the headers go upstream on PutObject and CreateMultipartUpload, the
    backend encrypts what it stores (s3crypt's ciphertext) under its KMS key, and its
    response headers come back to the client; reads need nothing more."""
    s3 = stack.s3()
    kms = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "s3crypt-test-kms"}
    data = os.urandom(100_000)
    r = s3.put_object(Bucket=bucket, Key="k", Body=data, **kms)
    assert (r["ServerSideEncryption"], r["SSEKMSKeyId"]) == ("aws:kms", "s3crypt-test-kms")
    for h in (s3.head_object(Bucket=bucket, Key="k"), stack.backend_s3().head_object(Bucket=bucket, Key="k")):
        assert (h["ServerSideEncryption"], h["SSEKMSKeyId"]) == ("aws:kms", "s3crypt-test-kms")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == data
    stored = stack.backend_s3().get_object(Bucket=bucket, Key="k")["Body"].read()
    assert len(stored) > len(data) and data[:4096] not in stored
    parts = [os.urandom(5 * MIB + 1), os.urandom(1000)]
    uid = s3.create_multipart_upload(Bucket=bucket, Key="m", **kms)["UploadId"]
    listed = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="m", UploadId=uid, PartNumber=n,
                                                       Body=body)["ETag"]} for n, body in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=uid, MultipartUpload={"Parts": listed})
    assert stack.backend_s3().head_object(Bucket=bucket, Key="m")["ServerSideEncryption"] == "aws:kms"
    assert s3.get_object(Bucket=bucket, Key="m")["Body"].read() == b"".join(parts)


def _sse_c_key():
    # 32 bytes; botocore takes the raw key as a str and sends its base64 and MD5.
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": os.urandom(16).hex()}


def _backend_enforces_sse_c(stack, bucket):
    """Whether the backend implements SSE-C and refuses a read without the key."""
    back = stack.backend_s3()
    probe = _sse_c_key()
    try:
        back.put_object(Bucket=bucket, Key="probe", Body=b"p", **probe)
        back.get_object(Bucket=bucket, Key="probe")
        return False
    except botocore.exceptions.ClientError as e:
        return not (e.response["ResponseMetadata"]["HTTPStatusCode"] == 501 or "NotImplemented" in str(e))


@pytest.mark.parametrize("last", [1000, 5 * MIB + 3], ids=["closing-part", "end-part"])
def test_sse_c_multipart_upload_needs_the_key_on_complete(stack, bucket, last):
    """An SSE-C multipart upload: the part the filter writes at Complete (the closing part
    rewritten from the short last part, or the end part) is stored under the client's key,
    which the client sends with CompleteMultipartUpload (as S3 allows). Without it the
    backend refuses the filter's part: a short last part then stays the client's final
    part (the object completes without its table and shows the backend's ETag); an end
    part is required, so that Complete fails and nothing is completed, and the same
    upload then completes with the key. Either way the object reads back under the key
    (also in a fresh process, whose reads of its last bytes carry the key)."""
    if not _backend_enforces_sse_c(stack, bucket):
        pytest.skip("the backend does not enforce SSE-C")
    s3 = stack.s3()
    key = _sse_c_key()
    parts = [os.urandom(5 * MIB + 1), os.urandom(last)]
    sealed = '"%s-2"' % hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    data = b"".join(parts)
    for with_key in (False, True):
        k = f"m-{with_key}"
        uid = s3.create_multipart_upload(Bucket=bucket, Key=k, **key)["UploadId"]
        listed = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key=k, UploadId=uid, PartNumber=n,
                                                           Body=body, **key)["ETag"]}
                  for n, body in enumerate(parts, 1)]
        complete = lambda **kw: s3.complete_multipart_upload(  # noqa: E731
            Bucket=bucket, Key=k, UploadId=uid, MultipartUpload={"Parts": listed}, **kw)
        if with_key:
            want = complete(**key)["ETag"]
            assert want == sealed
        elif last > 5 * MIB:
            with pytest.raises(botocore.exceptions.ClientError):
                complete()
            with pytest.raises(botocore.exceptions.ClientError) as e:
                stack.backend_s3().head_object(Bucket=bucket, Key=k, **key)
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404  # nothing completed
            assert complete(**key)["ETag"] == sealed
            want = sealed
        else:
            want = complete()["ETag"]
            assert want == stack.backend_s3().head_object(Bucket=bucket, Key=k, **key)["ETag"] != sealed
        fresh = stack.start_envoy()
        try:
            # A fresh process lists it without its key: the lookup is refused, the
            # listing goes on and shows what the listing alone says (its size).
            (entry,) = [o for o in fresh.s3().list_objects_v2(Bucket=bucket)["Contents"] if o["Key"] == k]
            assert entry["Size"] == len(data)
            for c in (s3, fresh.s3()):
                r = c.get_object(Bucket=bucket, Key=k, **key)
                assert (r["ETag"], r["Body"].read() == data) == (want, True)
                assert c.get_object(Bucket=bucket, Key=k, Range="bytes=5242878-5242883",
                                    **key)["Body"].read() == data[5242878:5242884]
        finally:
            fresh.stop()
        with pytest.raises(botocore.exceptions.ClientError):
            s3.get_object(Bucket=bucket, Key=k)


def test_sse_c_through_the_filter(stack, bucket):
    # Only meaningful where the backend enforces SSE-C (Ceph RGW, AWS): check directly.
    if not _backend_enforces_sse_c(stack, bucket):
        pytest.skip("the backend does not enforce or implement SSE-C")
    s3 = stack.s3()
    key = _sse_c_key()
    data = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="c", Body=data, **key)
    assert s3.get_object(Bucket=bucket, Key="c", **key)["Body"].read() == data
    # A range read makes the filter HEAD the object first: with the key.
    r = s3.get_object(Bucket=bucket, Key="c", Range="bytes=70000-70009", **key)
    assert r["Body"].read() == data[70000:70010]
    # A process that never saw the object reads its last bytes (the trailer) before the
    # GET, and its range read reads the trailer after the HEAD: both with the key.
    for rng in (None, "bytes=70000-70009"):
        fresh = stack.start_envoy()
        kw = {"Range": rng} if rng else {}
        r = fresh.s3().get_object(Bucket=bucket, Key="c", **kw, **key)
        assert r["Body"].read() == (data[70000:70010] if rng else data)
        assert r["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
        fresh.stop()
    # (botocore 1.44 sends GetObjectAttributes' SSE-C key raw, without base64 or its MD5:
    # the request is signed by hand, with the headers S3 defines.)
    import s3util
    raw_key = key["SSECustomerKey"].encode()
    status, _, body = s3util.signed_request(stack.endpoint, s3util.Signer(*stack.client_creds), "GET", f"/{bucket}/c",
                                            [("attributes", "")], {
        "x-amz-object-attributes": "ObjectSize",
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(raw_key).decode(),
        "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(hashlib.md5(raw_key).digest()).decode()})
    assert status == 200 and f"<ObjectSize>{len(data)}</ObjectSize>".encode() in body, body
    with pytest.raises(botocore.exceptions.ClientError):
        s3.get_object(Bucket=bucket, Key="c")

