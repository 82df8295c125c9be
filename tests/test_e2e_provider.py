"""The storage provider as the adversary: it rewrites what the backend holds or answers.
Reads fail closed by default: an object whose envelope was stripped, a success status
other than 200/206, or an envelope-less copy source releases nothing, and is served only
inside a passthrough scope the operator configured for a migration."""

import http.server
import threading

import botocore.exceptions
import pytest
import requests


def get_raw(envoy, bucket, key, **headers):
    url = envoy.s3().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    return requests.get(url, headers=headers, timeout=30)


def test_stripped_envelope_is_an_integrity_error(stack, bucket):
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="obj", Body=b"the genuine data" * 1000)
    forged = b"provider's own bytes " * 100
    stack.backend_s3().put_object(Bucket=bucket, Key="obj", Body=forged)  # no envelope
    before = stack.counter("s3crypt_integrity_failures")
    for headers in [{}, {"Range": "bytes=0-99"}, {"Range": "bytes=-10"}]:
        r = get_raw(stack, bucket, "obj", **headers)
        assert r.status_code == 500, (headers, r.status_code)
        assert b"integrity" in r.content and forged[:20] not in r.content
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket=bucket, Key="obj")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert stack.counter("s3crypt_integrity_failures") >= before + 4
    # The same object inside a passthrough scope is served, and counted.
    scoped = stack.start_envoy(plugin_extra={"passthrough_unencrypted": [f"{bucket}/ob"]})
    assert scoped.s3().get_object(Bucket=bucket, Key="obj")["Body"].read() == forged
    assert scoped.counter("s3crypt_plaintext_served") == 1
    # A scope is a bucket or a key prefix in one: other keys stay refused.
    stack.backend_s3().put_object(Bucket=bucket, Key="other", Body=forged)
    assert get_raw(scoped, bucket, "other").status_code == 500
    scoped.stop()


def test_envelope_less_copy_source_is_refused(stack, bucket):
    s3 = stack.s3()
    stack.backend_s3().put_object(Bucket=bucket, Key="plain", Body=b"plaintext source")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "plain"})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    keys = [o["Key"] for o in stack.backend_s3().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["plain"]
    # Source in scope but destination not: a server-side copy would store plaintext there.
    scoped = stack.start_envoy(plugin_extra={"passthrough_unencrypted": [f"{bucket}/plain"]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        scoped.s3().copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "plain"})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    # Both in the scope (a migration inside it): the backend copies.
    scoped.s3().copy_object(Bucket=bucket, Key="plain-copy", CopySource={"Bucket": bucket, "Key": "plain"})
    assert scoped.s3().get_object(Bucket=bucket, Key="plain-copy")["Body"].read() == b"plaintext source"
    scoped.stop()


class OddStatusBackend(http.server.ThreadingHTTPServer):
    """A backend that answers every GET/HEAD with 203 and a body of its choosing."""

    def __init__(self, status, body):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.send_header("etag", '"0123456789abcdef0123456789abcdef"')
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.mark.parametrize("status", [203, 204, 226])
def test_other_success_statuses_release_nothing(stack, status):
    """Any 2xx other than 200/206 on a data read is an integrity error, even inside a
    passthrough scope (the filter cannot tell what such an answer holds)."""
    body = b"" if status == 204 else b"unverifiable bytes"
    backend = OddStatusBackend(status, body)
    try:
        envoy = stack.start_envoy(s3_port=backend.server_address[1], plugin_extra={"passthrough_unencrypted": ["b"]})
        r = get_raw(envoy, "b", "k")
        assert r.status_code == 500, (r.status_code, r.content)
        if body:  # (a body-less answer cannot be given an error body)
            assert b"integrity" in r.content and body not in r.content
        envoy.stop()
    finally:
        backend.shutdown()


def test_stored_metadata_holds_no_plaintext_digest(stack, bucket):
    """The envelope seals the plaintext MD5 and checksum (version 2): the provider cannot
    confirm a guess of the content or spot equal files. The client still gets them."""
    import base64
    import hashlib
    import zlib

    s3 = stack.s3()
    data = b"four"  # short enough that a clear CRC32 would give the data away
    md5 = hashlib.md5(data)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    s3.put_object(Bucket=bucket, Key="c32", Body=data, ContentMD5=base64.b64encode(md5.digest()).decode(),
                  ChecksumCRC32=crc)
    s3.put_object(Bucket=bucket, Key="s256", Body=data, ChecksumSHA256=sha)
    for key in ["c32", "s256"]:
        head = stack.backend_s3().head_object(Bucket=bucket, Key=key)
        stored = repr(head["Metadata"]) + repr(head["ResponseMetadata"]["HTTPHeaders"])
        for needle in [md5.hexdigest(), base64.b64encode(md5.digest()).decode(), crc, sha]:
            assert needle not in stored, (key, needle)
        assert head["Metadata"]["s3crypt"].startswith("v=3;")
        assert ";m=" not in head["Metadata"]["s3crypt"] and ";c=" not in head["Metadata"]["s3crypt"]
    # Nor anywhere in the backend's storage (data, xattrs, omap of every RADOS object).
    for needle in [md5.hexdigest().encode(), md5.digest(), crc.encode(), sha.encode(), hashlib.sha256(data).digest()]:
        assert stack.backend_holds(needle) == [], needle
    # Through the filter the client sees them as S3 gives them.
    h = s3.head_object(Bucket=bucket, Key="c32", ChecksumMode="ENABLED")
    assert h["ETag"] == f'"{md5.hexdigest()}"' and h["ChecksumCRC32"] == crc
    assert s3.head_object(Bucket=bucket, Key="s256", ChecksumMode="ENABLED")["ChecksumSHA256"] == sha


def test_version_1_objects_stay_readable(stack, bucket):
    """An object in the version 1 format (digests in clear), written here by an
    independent implementation of docs/FORMAT.md, is read through the filter: data, ETag
    and checksum; a changed clear digest fails its envelope tag."""
    import base64
    import hashlib
    import os
    import zlib

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    from test_format_vectors import envelope_aad, frame_aad

    data = os.urandom(150_000)
    dek = os.urandom(32)
    gcm = AESGCM(dek)
    F = 65536
    frames = -(-len(data) // F)
    stored = b""
    for i in range(frames):
        nonce = os.urandom(12)
        stored += nonce + gcm.encrypt(nonce, data[i * F:(i + 1) * F], frame_aad(1, 0, 0, i, frames, len(data)))
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    env = {"v": "1", "s": "1", "t": "s", "k": stack.key_id,
           "w": base64.b64encode(aes_key_wrap_with_padding(stack.kek, dek)).decode(),
           "l": str(len(data)), "m": hashlib.md5(data).hexdigest(), "c": f"x-amz-checksum-crc32:{crc}"}
    nonce = os.urandom(12)
    env["a"] = base64.b64encode(nonce + gcm.encrypt(nonce, b"", envelope_aad(env))).decode()
    header = ";".join(f"{k}={v}" for k, v in env.items())
    stack.backend_s3().put_object(Bucket=bucket, Key="v1", Body=stored, Metadata={"s3crypt": header})
    s3 = stack.s3()
    g = s3.get_object(Bucket=bucket, Key="v1", ChecksumMode="ENABLED")
    assert g["Body"].read() == data
    assert g["ETag"] == f'"{hashlib.md5(data).hexdigest()}"' and g["ChecksumCRC32"] == crc
    assert s3.get_object(Bucket=bucket, Key="v1", Range="bytes=70000-70009")["Body"].read() == data[70000:70010]
    forged = header.replace(f"m={env['m']}", "m=" + "0" * 32)
    stack.backend_s3().put_object(Bucket=bucket, Key="v1-forged", Body=stored, Metadata={"s3crypt": forged})
    assert get_raw(stack, bucket, "v1-forged").status_code == 500
