"""Upstream integrity and object lock (WORM buckets) through Envoy + s3crypt against the
stack's S3 server (Ceph RGW): every upstream payload mode stores and reads back; RGW's own
verification of signed chunks and trailers, tested directly; object lock buckets,
retention, legal hold and a locked version that cannot be deleted."""

import base64
import datetime
import hashlib
import hmac
import os
import urllib.parse

import botocore.exceptions
import pytest
import requests

from s3util import EMPTY_SHA256, Signer
from stack import REGION

MiB = 1 << 20
MODES = ["signed-chunks", "signed-chunks-crc32c", "unsigned"]


def crc32c_b64(data):
    # Castagnoli, bitwise (test sizes are small).
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return base64.b64encode((crc ^ 0xFFFFFFFF).to_bytes(4, "big")).decode()


def signed_chunks(data, chunk, seed, key, amz_date, scope, trailer=None, flip=None):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] body; `trailer` a (name, value) pair;
    `flip` a data offset changed after signing."""
    out, prev = b"", seed
    for piece in [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY_SHA256,
                         hashlib.sha256(piece).hexdigest()])
        prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out += f"{len(piece):x};chunk-signature={prev}\r\n".encode() + piece + (b"\r\n" if piece else b"")
    if trailer:
        line = f"{trailer[0]}:{trailer[1]}"
        sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev,
                         hashlib.sha256((line + "\n").encode()).hexdigest()])
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out += f"{line}\r\nx-amz-trailer-signature:{sig}\r\n".encode()
    out += b"\r\n"
    if flip is not None:
        at = out.index(b"\r\n") + 2 + flip
        out = out[:at] + bytes([out[at] ^ 1]) + out[at + 1:]
    return out


def backend_put_chunked(stack, bucket, key, data, trailer=None, flip=None):
    """A signed aws-chunked PUT straight to the backend, as the filter sends one."""
    endpoint = stack.backend_endpoint
    host = urllib.parse.urlparse(endpoint).netloc
    signer = Signer(*stack.backend_creds, region=REGION)
    # (No Content-Encoding: aws-chunked, as the filter sends it: RGW 16 would store it.)
    headers = {"x-amz-decoded-content-length": str(len(data))}
    payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    if trailer:
        headers["x-amz-trailer"] = trailer[0]
        payload += "-TRAILER"
    headers["content-length"] = str(len(signed_chunks(data, 65536, "0" * 64, b"k" * 32, "x", "y", trailer)))
    h, sig, k, amz_date, scope = Signer.sign(signer, "PUT", host, f"/{bucket}/{key}", headers=headers,
                                            payload_hash=payload)
    body = signed_chunks(data, 65536, sig, k, amz_date, scope, trailer, flip)
    return requests.put(f"{endpoint}/{bucket}/{key}", data=body, headers=h, timeout=60)


def test_backend_verifies_signed_chunks_and_trailers(stack, bucket):
    """What the backend does with each upstream encoding, without the filter: signed
    chunks are verified (a changed byte is refused, nothing stored); the signed trailer
    mode is reported as the backend answers it."""
    data = os.urandom(150_000)
    b3 = stack.backend_s3()
    r = backend_put_chunked(stack, bucket, "ok", data)
    assert r.status_code == 200, r.text
    got = b3.get_object(Bucket=bucket, Key="ok")
    assert got["Body"].read() == data
    assert "aws-chunked" not in got.get("ContentEncoding", ""), got.get("ContentEncoding")
    for flip in (0, 70_000, len(data) - 1):
        r = backend_put_chunked(stack, bucket, "bad", data, flip=flip)
        assert r.status_code in (400, 403), (flip, r.status_code, r.text)
        with pytest.raises(botocore.exceptions.ClientError):
            b3.head_object(Bucket=bucket, Key="bad")
    # The trailer mode (signed-chunks-crc32c), right and wrong checksum.
    good = backend_put_chunked(stack, bucket, "t", data, trailer=("x-amz-checksum-crc32c", crc32c_b64(data)))
    wrong = backend_put_chunked(stack, bucket, "tw", data, trailer=("x-amz-checksum-crc32c", "AAAAAA=="))
    if stack.backend == "rgw":
        # RGW 16 (pacific) knows no trailers: it refuses the mode whatever the checksum.
        for r in (good, wrong):
            assert r.status_code == 400 and "XAmzContentSHA256Mismatch" in r.text, (r.status_code, r.text)
    else:
        assert good.status_code == 200, good.text
        assert b3.get_object(Bucket=bucket, Key="t")["Body"].read() == data
        assert wrong.status_code == 400, wrong.text


@pytest.mark.parametrize("mode", MODES)
def test_each_upstream_mode_stores_and_reads_back(stack, bucket, mode):
    envoy = stack.start_envoy(plugin_extra={"upstream_payload": mode})
    s3 = envoy.s3()
    single = os.urandom(300_000)
    try:
        s3.put_object(Bucket=bucket, Key="single", Body=single, ContentEncoding="gzip")
        s3.put_object(Bucket=bucket, Key="empty", Body=b"")
        parts = [os.urandom(5 * MiB + 7), os.urandom(1234)]
        mpu = s3.create_multipart_upload(Bucket=bucket, Key="multi")
        etags = [s3.upload_part(Bucket=bucket, Key="multi", UploadId=mpu["UploadId"], PartNumber=n + 1,
                                Body=p)["ETag"] for n, p in enumerate(parts)]
        s3.complete_multipart_upload(Bucket=bucket, Key="multi", UploadId=mpu["UploadId"], MultipartUpload={
            "Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})
    except botocore.exceptions.ClientError as e:
        if mode == "signed-chunks-crc32c" and stack.backend == "rgw":
            # RGW 16 refuses STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER (the mode is for
            # AWS object lock buckets); nothing is stored.
            assert e.response["Error"]["Code"] == "XAmzContentSHA256Mismatch", e.response
            with pytest.raises(botocore.exceptions.ClientError):
                stack.backend_s3().head_object(Bucket=bucket, Key="single")
            return
        raise
    assert not (mode == "signed-chunks-crc32c" and stack.backend == "rgw"), "RGW 16 accepted a signed trailer"
    got = s3.get_object(Bucket=bucket, Key="single")
    assert got["Body"].read() == single
    assert got.get("ContentEncoding") == "gzip"
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    assert s3.get_object(Bucket=bucket, Key="multi")["Body"].read() == b"".join(parts)
    # UploadPartCopy: the part the filter re-encrypts and sends itself.
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="copied")
    e = s3.upload_part_copy(Bucket=bucket, Key="copied", UploadId=mpu["UploadId"], PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "single"},
                            CopySourceRange="bytes=10-200009")["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="copied", UploadId=mpu["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == single[10:200010]
    # The backend stored the ciphertext (no framing, no aws-chunked encoding).
    b = stack.backend_s3().get_object(Bucket=bucket, Key="single")
    assert len(b["Body"].read()) > len(single)
    assert b.get("ContentEncoding") == "gzip"


def lock_bucket(s3, name):
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_object_lock_bucket_through_the_filter(stack, bucket):
    s3 = stack.s3()
    name = lock_bucket(s3, bucket + "-lock")
    assert stack.backend_s3().get_bucket_versioning(Bucket=name).get("Status") == "Enabled"
    s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
    })
    cfg = s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]
    assert cfg["Rule"]["DefaultRetention"] == {"Mode": "GOVERNANCE", "Days": 1}
    until = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)).replace(microsecond=0)
    data = os.urandom(200_000)

    # Single PUTs: default retention, and explicit headers.
    v_default = s3.put_object(Bucket=name, Key="a", Body=data)["VersionId"]
    v_explicit = s3.put_object(Bucket=name, Key="b", Body=data, ObjectLockMode="GOVERNANCE",
                               ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")["VersionId"]
    r = s3.get_object_retention(Bucket=name, Key="b", VersionId=v_explicit)["Retention"]
    assert r["Mode"] == "GOVERNANCE" and r["RetainUntilDate"] == until
    assert s3.get_object_legal_hold(Bucket=name, Key="b")["LegalHold"]["Status"] == "ON"
    # Multipart, with lock headers on CreateMultipartUpload.
    parts = [os.urandom(5 * MiB + 1), os.urandom(999)]
    mpu = s3.create_multipart_upload(Bucket=name, Key="m", ObjectLockMode="GOVERNANCE",
                                     ObjectLockRetainUntilDate=until)
    etags = [s3.upload_part(Bucket=name, Key="m", UploadId=mpu["UploadId"], PartNumber=n + 1, Body=p)["ETag"]
             for n, p in enumerate(parts)]
    v_multi = s3.complete_multipart_upload(Bucket=name, Key="m", UploadId=mpu["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})["VersionId"]
    assert s3.get_object_retention(Bucket=name, Key="m")["Retention"]["Mode"] == "GOVERNANCE"

    # PutObjectRetention / legal hold on an existing version.
    later = until + datetime.timedelta(days=1)
    s3.put_object_retention(Bucket=name, Key="a", VersionId=v_default,
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later})
    assert s3.get_object_retention(Bucket=name, Key="a", VersionId=v_default)["Retention"]["RetainUntilDate"] == later
    s3.put_object_legal_hold(Bucket=name, Key="a", LegalHold={"Status": "ON"})
    assert s3.get_object_legal_hold(Bucket=name, Key="a")["LegalHold"]["Status"] == "ON"
    s3.put_object_legal_hold(Bucket=name, Key="a", LegalHold={"Status": "OFF"})

    # A locked version cannot be deleted; reads still return the plaintext.
    for key, vid in [("a", v_default), ("b", v_explicit), ("m", v_multi)]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.delete_object(Bucket=name, Key=key, VersionId=vid)
        assert e.value.response["Error"]["Code"] == "AccessDenied", (key, e.value.response)
    assert s3.get_object(Bucket=name, Key="a", VersionId=v_default)["Body"].read() == data
    assert s3.get_object(Bucket=name, Key="b")["Body"].read() == data
    assert s3.get_object(Bucket=name, Key="m", VersionId=v_multi)["Body"].read() == b"".join(parts)
    # The backend holds ciphertext only.
    assert stack.backend_s3().get_object(Bucket=name, Key="a")["Body"].read() != data
