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
    # Nor in any file of the backend (s3s-fs keeps metadata in files next to the data).
    import pathlib
    for p in pathlib.Path(stack.data_dir).rglob("*"):
        if p.is_file() and bucket in str(p):
            raw = p.read_bytes()
            for needle in [md5.hexdigest().encode(), crc.encode(), sha.encode()]:
                assert needle not in raw, (p, needle)
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


TRUNCATIONS = ["inside-frame", "whole-frames", "frame-boundary-of-5-MiB-part", "most-of-last-part",
               "whole-end-marker", "whole-last-part"]


@pytest.mark.parametrize("cut", TRUNCATIONS)
def test_truncated_multipart_object_never_looks_complete(stack, bucket, cut):
    """The provider cuts the tail of a multipart object's stored file (nothing else). The
    Content-Length the filter can compute shrinks with it, so a whole GET holds back the
    last promised byte until the stream verified (the client gets a verified prefix of the
    true object, short of what was announced, then a reset), and range and part reads find
    no consistent part table: every read form fails, releasing only true prefixes."""
    from test_e2e_multipart import MiB, PART_OVERHEAD, upload_parts
    from test_e2e_objects import pattern

    s3 = stack.s3()
    # A 5 MiB last part can be followed, so the filter ends that object with an empty end
    # marker; a 10,000-byte last part is itself the final part.
    big_last = cut in ("whole-frames", "frame-boundary-of-5-MiB-part", "whole-end-marker")
    parts = {1: pattern(5 * MiB, 90), 2: pattern(5 * MiB if big_last else 10_000, 91)}
    data = parts[1] + parts[2]
    upload_parts(s3, bucket, "t", parts)
    path = stack.backend_object_path(bucket, "t")
    stored = path.read_bytes()
    assert len(stored) == len(data) + (3 if big_last else 2) * PART_OVERHEAD
    frame = -(-len(parts[2]) // 1024) + 28  # stored length of one frame of part 2
    marker = PART_OVERHEAD if big_last else 0
    n = {"inside-frame": 5000, "whole-frames": marker + 3 * frame,
         "frame-boundary-of-5-MiB-part": marker + 1, "most-of-last-part": len(parts[2]),
         "whole-end-marker": marker, "whole-last-part": len(parts[2]) + PART_OVERHEAD}[cut]
    path.write_bytes(stored[:-n])
    before = stack.counter("s3crypt_integrity_failures")
    for form, params, want in [
        ("whole", {}, data),
        ("range", {"Range": f"bytes={5 * MiB - 10}-{5 * MiB + 10}"}, data[5 * MiB - 10:5 * MiB + 11]),
        ("suffix", {"Range": "bytes=-100"}, data[-100:]),
        ("part 1", {"PartNumber": 1}, parts[1]),
        ("part 2", {"PartNumber": 2}, parts[2]),
    ]:
        status, got, complete = read_all(stack, bucket, "t", **params)
        assert not (status in (200, 206) and complete), (form, cut, len(got))
        assert status >= 400 or got == want[:len(got)], (form, cut, "only a true prefix")
        if form == "whole":
            assert status == 200 and len(got) < len(data)
    assert stack.counter("s3crypt_integrity_failures") > before


def read_all(envoy, bucket, key, **params):
    """A raw GET (range as `Range=`, or `PartNumber=`): (status, bytes, complete)."""
    range_ = params.pop("Range", None)
    if range_:
        # A presigned URL signs only host, and the filter ignores unsigned headers: the
        # Range goes in a header-signed request.
        import http.client

        import s3util
        creds = getattr(envoy, "stack", envoy).client_creds
        try:
            status, headers, body = s3util.signed_request(
                envoy.endpoint, s3util.Signer(*creds), "GET", f"/{bucket}/{key}", headers={"range": range_})
        except (http.client.HTTPException, ConnectionError):
            return 0, b"", False
        complete = "content-length" in headers and len(body) == int(headers["content-length"])
        return status, body, complete
    from test_e2e_objects import read_all_or_error

    status, got, complete = read_all_or_error(envoy, bucket, key, **params)
    return status or 0, got, complete


def set_backend_etag(stack, bucket, key, etag):
    """Rewrites the ETag s3s-fs reports for an object (its internal metadata file)."""
    import base64
    import json
    import pathlib

    b64 = lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")  # noqa: E731
    [path] = [p for p in pathlib.Path(stack.data_dir).glob(f".bucket-{b64(bucket)}.object-{b64(key)}.internal.json")]
    meta = json.loads(path.read_text())
    meta["e_tag"] = etag
    path.write_text(json.dumps(meta))


MP_TAMPERS = ["swap", "duplicate", "drop-middle", "drop-middle-and-rewrite-etag", "drop-last-and-rewrite-etag",
              "drop-end-part-and-rewrite-etag", "foreign-end-part", "shift-by-rewritten-headers", "append-a-part"]


@pytest.mark.parametrize("tamper", MP_TAMPERS)
def test_tampered_multipart_object_releases_only_a_true_prefix(stack, bucket, tamper):
    """The provider rearranges the stored parts of a multipart object (and, where said,
    rewrites the reported ETag to match). Every read form that touches a part not where
    the client put it fails, and whatever a read released is a true prefix of what it
    asked for. (A read of part 3 of an object whose parts 1 and 2 were swapped, same total
    size, uses the sealed part table and reads only part 3, which is genuine and in its
    place: it returns exactly the client's bytes, which is correct.)"""
    from test_e2e_multipart import MiB, PART_OVERHEAD, upload_parts
    from test_e2e_objects import pattern

    s3 = stack.s3()
    # Part 1 longer than part 2, so that a part moved to another slot changes offsets;
    # the third part is 10,000 bytes (a final part) or, for the end-part cases, 5 MiB
    # (then the filter adds part 4, the end part, which seals the part table).
    marked = tamper in ("drop-end-part-and-rewrite-etag", "foreign-end-part")
    parts = {1: pattern(5 * MiB + 4096, 95), 2: pattern(5 * MiB, 96), 3: pattern(5 * MiB if marked else 10_000, 97)}
    data = parts[1] + parts[2] + parts[3]
    upload_parts(s3, bucket, "mp", parts)
    path = stack.backend_object_path(bucket, "mp")
    stored = path.read_bytes()
    n1, n2 = len(parts[1]) + PART_OVERHEAD, len(parts[2]) + PART_OVERHEAD
    s1, s2, s3_ = stored[:n1], stored[n1:n1 + n2], stored[n1 + n2:]
    etag = stack.backend_s3().head_object(Bucket=bucket, Key="mp")["ETag"].strip('"')
    assert etag.endswith("-4" if marked else "-3")
    # Part 1 again in part 2's slot, its header rewritten to say "part 2": a walk of the
    # headers alone would place part 3 4 KiB too far and release its bytes there.
    relabelled = s1[:4] + (2).to_bytes(4, "big") + s1[8:]
    foreign = b""
    if tamper == "foreign-end-part":
        # The end part of another object with the same part sizes (another data key).
        upload_parts(s3, bucket, "other", {n: pattern(len(p), 99) for n, p in parts.items()})
        foreign = stack.backend_object_path(bucket, "other").read_bytes()[-PART_OVERHEAD:]
    new = {"swap": s2 + s1 + s3_, "duplicate": s1 + s1 + s3_, "drop-middle": s1 + s3_,
           "drop-middle-and-rewrite-etag": s1 + s3_, "drop-last-and-rewrite-etag": s1 + s2,
           "drop-end-part-and-rewrite-etag": stored[:-PART_OVERHEAD],
           "foreign-end-part": stored[:-PART_OVERHEAD] + foreign,
           "shift-by-rewritten-headers": s1 + relabelled + s3_,
           "append-a-part": stored + s2}[tamper]
    path.write_bytes(new)
    if tamper.endswith("rewrite-etag"):
        set_backend_etag(stack, bucket, "mp", etag.rsplit("-", 1)[0] + ("-3" if marked else "-2"))
    if tamper == "append-a-part":
        set_backend_etag(stack, bucket, "mp", etag.rsplit("-", 1)[0] + "-4")
    failures = []
    p3 = len(parts[1]) + len(parts[2])
    for form, params, want in [
        ("whole", {}, data),
        ("range", {"Range": f"bytes={5 * MiB - 10}-{5 * MiB + 10}"}, data[5 * MiB - 10:5 * MiB + 11]),
        ("range in part 3", {"Range": f"bytes={p3 + 5}-{p3 + 50}"}, data[p3 + 5:p3 + 51]),
        ("suffix", {"Range": "bytes=-100"}, data[-100:]),
        ("part 2", {"PartNumber": 2}, parts[2]),
        ("part 3", {"PartNumber": 3}, parts[3]),
    ]:
        status, got, complete = read_all(stack, bucket, "mp", **params)
        ok_read = status in (200, 206) and complete
        if ok_read and tamper == "swap" and form in ("range in part 3", "suffix", "part 3"):
            assert got == want, form
        elif ok_read:
            failures.append(form)
        assert got == want[:len(got)] or status >= 400, (form, status, len(got))
    assert failures == [], f"reads that succeeded on a tampered object: {failures}"
