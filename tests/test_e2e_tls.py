"""The local stack's TLS listener (envoy/local.yaml.in `s3_tls`, a certificate from the
stack's own CA): over TLS boto3 streams uploads as aws-chunked bodies with a trailing
checksum (STREAMING-UNSIGNED-PAYLOAD-TRAILER), which the filter verifies and re-encodes;
the backend (RGW) gets ciphertext only."""

import base64
import hashlib
import ssl
import zlib

import botocore.exceptions
import pytest
import requests

from test_e2e_objects import pattern

MiB = 1 << 20


def test_tls_put_get_with_trailing_checksums(stack, bucket):
    events = []
    s3 = stack.s3(tls=True)
    s3.meta.events.register("before-send.s3.PutObject", lambda request, **_: events.append(
        {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}))
    data = pattern(3 * MiB + 17, seed=61)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    r = s3.put_object(Bucket=bucket, Key="t", Body=data, ChecksumAlgorithm="CRC32")
    assert r["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    sent = events[-1]
    assert sent.get("x-amz-trailer") == "x-amz-checksum-crc32", sent
    assert sent.get("x-amz-content-sha256") == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", sent
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == data
    stored = stack.stored(bucket, "t")
    assert data[:4096] not in stored and len(stored) > len(data)
    # Plain http on the other listener reads the same object.
    assert stack.s3().get_object(Bucket=bucket, Key="t")["Body"].read() == data


def test_tls_trailing_checksum_is_returned(stack, bucket):
    s3 = stack.s3(tls=True)
    data = pattern(100_000, seed=64)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    s3.put_object(Bucket=bucket, Key="t", Body=data, ChecksumAlgorithm="CRC32")
    assert s3.head_object(Bucket=bucket, Key="t", ChecksumMode="ENABLED").get("ChecksumCRC32") == crc


def test_tls_multipart_upload(stack, bucket):
    s3 = stack.s3(tls=True)
    parts = {1: pattern(5 * MiB, 62), 2: pattern(1234, 63)}
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32")["UploadId"]
    done = []
    for n, p in parts.items():
        r = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=n, Body=p, ChecksumAlgorithm="CRC32")
        done.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": done})
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == parts[1] + parts[2]


def test_tls_certificate_is_the_stacks(stack):
    """The listener presents the stack's certificate: trusted with its CA, refused without."""
    assert requests.get(stack.main.tls_endpoint + "/healthz", verify=str(stack.tls[0]), timeout=10).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(stack.main.tls_endpoint + "/healthz", timeout=10)
    ctx = ssl.create_default_context(cafile=str(stack.tls[0]))
    assert ctx.check_hostname
    with pytest.raises(botocore.exceptions.ClientError) as e:
        stack.s3(tls=True, secret="wrong" * 8).list_buckets()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
