"""The request boundary, tried as a hostile (but authenticated) client would: only known
operations pass (default deny), every x-amz-* header must be signed, nothing unsigned
reaches the backend, keys cannot be resolved differently by the backend, and repeated
operation parameters are refused. Real Envoy + filter + s3s-fs; the backend's own files
and listings are read to see that nothing was written."""

import hashlib
import http.server
import os
import pathlib
import secrets
import threading
import urllib.parse

import botocore.exceptions
import pytest
import requests

import s3util

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"]
# Real S3 subresources the filter refuses, made-up ones, real ones it knows, and
# combinations that once reached PutObject at the backend.
SUBRESOURCES = [
    "torrent", "restore", "attributes", "select&select-type=2", "renameObject", "unknown-thing",
    "x-id=PutObject&torrent", "tagging", "acl", "retention", "legal-hold", "uploads",
    "uploadId=u1", "partNumber=1&uploadId=u1", "versions", "location", "policy", "delete",
    "cors", "website", "lifecycle", "inventory", "metrics", "analytics", "intelligent-tiering",
    "versionId=1", "x-id=GetObject", "list-type=2", "uploads&torrent", "tagging&acl",
]
# Always refused, at both levels and with every method.
REFUSED = {"torrent", "restore", "select&select-type=2", "renameObject", "unknown-thing",
           "x-id=PutObject&torrent", "inventory", "metrics", "analytics", "intelligent-tiering",
           "uploads&torrent", "tagging&acl"}


def params_of(sub):
    return [tuple(p.split("=", 1)) if "=" in p else (p, "") for p in sub.split("&")]


def signer(stack):
    return s3util.Signer(*stack.client_creds)


def send(stack, method, path, params=(), headers=None, body=b"", **kw):
    return s3util.signed_request(stack.endpoint, signer(stack), method, path, params, headers, body, **kw)


def backend_files_containing(stack, needle):
    """Every place of the S3 server's storage (RGW: each RADOS object's data, xattrs and
    omap) that contains `needle`."""
    return stack.backend_holds(needle)


def backend_keys(stack, bucket):
    return sorted(o["Key"] for o in stack.backend_s3().list_objects_v2(Bucket=bucket).get("Contents", []))


def assert_not_implemented(status, body, what):
    assert status == 501, (what, status, body[:300])
    if "HEAD" not in what:  # a HEAD answer has no body
        assert b"<Code>NotImplemented</Code>" in body, (what, body[:300])


def test_every_method_and_subresource_is_known_or_refused(stack, bucket):
    """The class, not the examples: every S3 method x real and made-up subresources, at the
    bucket and at the object level, with a plaintext body. Each request is either a known
    operation or 501; afterwards no file of the backend holds the plaintext, and the
    objects that exist are the ones the test made."""
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="existing", Body=b"existing object body, encrypted")
    stored = stack.backend_s3().get_object(Bucket=bucket, Key="existing")["Body"].read()
    marker = b"PLAINTEXT-" + secrets.token_hex(8).encode()
    seen = []
    for level, path in [("bucket", f"/{bucket}"), ("object", f"/{bucket}/existing"), ("new", f"/{bucket}/new-object")]:
        for method in METHODS:
            for sub in SUBRESOURCES:
                body = marker * 20 if method in ("PUT", "POST") else b""
                what = (level, method, sub)
                try:
                    status, _, got = send(stack, method, path, params_of(sub), body=body)
                except Exception as e:
                    raise AssertionError(f"{what}: {e!r}") from e
                seen.append((what, status))
                if sub in REFUSED or method == "PATCH":
                    assert_not_implemented(status, got, what)
                if status == 501 and method != "HEAD":
                    assert b"NotImplemented" in got, what
                # No response other than GetObject's releases stored bytes.
                assert stored[:32] not in got, what
    assert backend_files_containing(stack, marker) == []
    # Known operations may have written (PUT ?x-id=GetObject is a PutObject): only the two
    # object names, and each holds an envelope (stored through the encrypting path).
    keys = backend_keys(stack, bucket)
    assert set(keys) <= {"existing", "new-object"}, keys
    for k in keys:
        assert "s3crypt" in stack.backend_s3().head_object(Bucket=bucket, Key=k)["Metadata"], k
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() in (b"existing object body, encrypted", marker * 20)
    assert sum(1 for _, st in seen if st == 501) > len(seen) // 2


def test_data_subresources_of_the_issue(stack, bucket):
    """The reproduced bypasses: PUT ?torrent/?restore/?attributes/?x-id=PutObject&torrent
    stored the body in clear; GET ?restore returned the ciphertext; HEAD ?torrent the
    ciphertext size. All are 501 now and nothing reaches the backend."""
    body = b"secret plaintext " + secrets.token_hex(8).encode()
    for i, sub in enumerate(["torrent", "restore", "attributes", "x-id=PutObject&torrent"]):
        status, _, got = send(stack, "PUT", f"/{bucket}/k{i}", params_of(sub), body=body)
        assert_not_implemented(status, got, ("PUT", sub))
    assert backend_keys(stack, bucket) == []
    assert backend_files_containing(stack, body) == []
    stack.s3().put_object(Bucket=bucket, Key="obj", Body=b"x" * 1000)
    status, _, got = send(stack, "GET", f"/{bucket}/obj", [("restore", "")])
    assert_not_implemented(status, got, ("GET", "restore"))
    status, headers, _ = send(stack, "HEAD", f"/{bucket}/obj", [("torrent", "")])
    assert status == 501 and headers.get("content-length") not in (str(1000 + 28), str(1000 + 28 + 156))


def test_documents_of_unknown_meaning_are_not_forwarded(stack, bucket):
    """A known configuration operation only forwards the document it takes: object data
    sent to ?tagging, ?acl or a bucket's ?policy is refused with nothing stored."""
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="o", Body=b"o")
    data = b"not a tagging document " + secrets.token_hex(8).encode()
    for path, sub in [(f"/{bucket}/o", "tagging"), (f"/{bucket}/o", "acl"), (f"/{bucket}/o", "retention"),
                      (f"/{bucket}", "policy"), (f"/{bucket}", "cors"), (f"/{bucket}", "")]:
        status, _, got = send(stack, "PUT", path, params_of(sub) if sub else [], body=data)
        assert status == 400, (sub, status, got)
        assert b"MalformedXML" in got or b"MalformedPolicy" in got, got
    # The right root element followed by anything else is not that document either.
    doc = b"<Tagging><TagSet></TagSet></Tagging>" + data
    status, _, got = send(stack, "PUT", f"/{bucket}/o", [("tagging", "")], body=doc)
    assert status == 400 and b"MalformedXML" in got, got
    # Bodies on operations that take none are refused too.
    status, _, got = send(stack, "DELETE", f"/{bucket}/o", body=data)
    assert status == 400 and b"takes no request body" in got
    status, _, got = send(stack, "GET", f"/{bucket}/o", body=data)
    assert status == 400
    assert backend_files_containing(stack, data) == []
    # A real document is forwarded, and the backend keeps it.
    s3.put_object_tagging(Bucket=bucket, Key="o", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert stack.backend_s3().get_object_tagging(Bucket=bucket, Key="o")["TagSet"] == [{"Key": "a", "Value": "b"}]


def test_presigned_url_cannot_gain_a_copy_source(stack, bucket):
    """A presigned PUT (SignedHeaders=host) sent with an extra x-amz-copy-source was a
    CopyObject of any object the filter could read. Now: 403, nothing written."""
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="secret", Body=b"the secret object")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "target"}, ExpiresIn=60)
    for extra in [{"x-amz-copy-source": f"/{bucket}/secret"}, {"x-amz-meta-evil": "1"}, {"x-amz-tagging": "a=b"},
                  {"x-amz-website-redirect-location": "/x"}, {"x-amz-acl": "public-read"}]:
        r = requests.put(url, data=b"body", headers=extra, timeout=10)
        assert r.status_code == 403, (extra, r.text)
        assert b"AccessDenied" in r.content and b"not signed" in r.content
        assert next(iter(extra)).encode() in r.content
    assert backend_keys(stack, bucket) == ["secret"]
    # The same URL without extras works.
    assert requests.put(url, data=b"body", timeout=10).status_code == 200


def test_replayed_request_cannot_gain_headers(stack, bucket):
    """A captured header-signed PUT replayed within the skew window with unsigned x-amz-*
    headers added: refused, the target untouched; the original replays fine."""
    stack.s3().put_object(Bucket=bucket, Key="secret", Body=b"the secret object")
    host = urllib.parse.urlparse(stack.endpoint).netloc
    body = b"captured body"
    h, *_ = signer(stack).sign("PUT", host, f"/{bucket}/target", headers={"x-amz-meta-ok": "1"},
                               payload_hash=hashlib.sha256(body).hexdigest())
    for extra in [{"x-amz-copy-source": f"/{bucket}/secret"}, {"x-amz-meta-evil": "1"}, {"x-amz-tagging": "a=b"},
                  {"x-amz-website-redirect-location": "/elsewhere"}, {"X-Amz-Metadata-Directive": "REPLACE"}]:
        status, _, got = s3util.raw_request(stack.endpoint, "PUT", f"/{bucket}/target", {**h, **extra}, body)
        assert status == 403 and b"not signed" in got, (extra, got)
    assert backend_keys(stack, bucket) == ["secret"]
    status, _, _ = s3util.raw_request(stack.endpoint, "PUT", f"/{bucket}/target", h, body)
    assert status == 200
    head = stack.s3().head_object(Bucket=bucket, Key="target")
    assert head["Metadata"] == {"ok": "1"} and head["ContentLength"] == len(body)
    assert stack.s3().get_object(Bucket=bucket, Key="target")["Body"].read() == body


def test_dot_segments_and_unsafe_keys_are_refused(stack, bucket):
    """Signed GETs of /b/x/../k, /b/./k and /other/../b/k returned k's raw ciphertext (the
    backend normalised the data path, not the metadata's). Refused now, raw or encoded,
    and as a copy source."""
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="k", Body=b"k's plaintext")
    stored = stack.backend_s3().get_object(Bucket=bucket, Key="k")["Body"].read()
    for decoded, raw in [
        (f"/{bucket}/x/../k", None), (f"/{bucket}/./k", None), (f"/other/../{bucket}/k", None),
        (f"/{bucket}/x/../k", f"/{bucket}/x/%2e%2e/k"), (f"/{bucket}/./k", f"/{bucket}/%2E/k"),
        (f"/{bucket}//k", None), (f"/{bucket}/a\x00b", f"/{bucket}/a%00b"),
    ]:
        for method in ["GET", "HEAD", "PUT"]:
            status, _, got = send(stack, method, decoded, raw_path=raw, body=b"new" if method == "PUT" else b"")
            assert status == 400, (method, decoded, raw, status)
            assert stored[:32] not in got
    status, _, got = send(stack, "PUT", f"/{bucket}/copy", headers={"x-amz-copy-source": f"/{bucket}/x/../k"})
    assert status == 400, got
    assert backend_keys(stack, bucket) == ["k"]
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"k's plaintext"
    # Ordinary keys with dots inside segments still work.
    for key in ["a.b/..c/d..", ".hidden", "x/.../y"]:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()


def test_presigned_url_rules(stack, bucket):
    """Presigned URLs must sign host and expire after 1..604800 seconds."""
    stack.s3().put_object(Bucket=bucket, Key="p", Body=b"presigned")
    host = urllib.parse.urlparse(stack.endpoint).netloc
    sg = signer(stack)
    q = sg.presign("GET", host, f"/{bucket}/p", headers={"x-amz-meta-a": "1"})
    r = requests.get(f"{stack.endpoint}/{bucket}/p?{q}", headers={"x-amz-meta-a": "1"}, timeout=10)
    assert r.status_code == 400 and b"host" in r.content, r.text
    for expires in [0, -5, 604801]:
        q = sg.presign("GET", host, f"/{bucket}/p", expires=expires)
        r = requests.get(f"{stack.endpoint}/{bucket}/p?{q}", timeout=10)
        assert r.status_code == 400 and b"AuthorizationQueryParametersError" in r.content, (expires, r.text)
    q = sg.presign("GET", host, f"/{bucket}/p", expires=604800)
    r = requests.get(f"{stack.endpoint}/{bucket}/p?{q}", timeout=10)
    assert r.status_code == 200 and r.content == b"presigned"


def test_duplicate_operation_parameters_are_refused(stack, bucket):
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="v", Body=b"v")
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    for method, params in [
        ("PUT", [("partNumber", "1"), ("partNumber", "2"), ("uploadId", up)]),
        ("PUT", [("partNumber", "1"), ("uploadId", up), ("uploadId", "other")]),
        ("GET", [("versionId", "1"), ("versionId", "2")]),
        ("DELETE", [("uploadId", up), ("uploadId", up)]),
        ("GET", [("partNumber", "1"), ("partNumber", "2")]),
    ]:
        key = "mp" if any(k == "uploadId" for k, _ in params) else "v"
        status, _, got = send(stack, method, f"/{bucket}/{key}", params, body=b"x" * 10 if method == "PUT" else b"")
        assert status == 400 and b"appears more than once" in got, (params, got)
    # The upload is untouched: a part and Complete still work.
    p = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"part one")
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"part one"


def test_abort_of_another_key_keeps_the_upload(stack, bucket):
    """AbortMultipartUpload with the right UploadId but another key used to forget the
    upload's state. The filter knows the upload's object: 404 NoSuchUpload, the backend
    untouched (s3s-fs would abort by UploadId alone), and the upload goes on. (That a
    backend's 404 keeps the state is a native test of the engine.)"""
    s3 = stack.s3()
    up = s3.create_multipart_upload(Bucket=bucket, Key="a")["UploadId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.abort_multipart_upload(Bucket=bucket, Key="b", UploadId=up)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    p = s3.upload_part(Bucket=bucket, Key="a", UploadId=up, PartNumber=1, Body=b"still here")
    s3.complete_multipart_upload(Bucket=bucket, Key="a", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"still here"


def test_only_the_envelope_name_is_reserved(stack, bucket):
    """x-amz-meta-s3cryptography was silently dropped (a prefix was reserved); it is user
    metadata like any other. The envelope's own name is refused, not dropped."""
    s3 = stack.s3()
    meta = {"s3cryptography": "kept", "s3crypt-x": "kept too", "s3cryptx": "3"}
    s3.put_object(Bucket=bucket, Key="m", Body=b"m", Metadata=meta)
    assert s3.head_object(Bucket=bucket, Key="m")["Metadata"] == meta
    s3.copy_object(Bucket=bucket, Key="m2", CopySource={"Bucket": bucket, "Key": "m"})
    assert s3.head_object(Bucket=bucket, Key="m2")["Metadata"] == meta
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="forged", Body=b"f", Metadata={"s3crypt": "v=1;forged"})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    assert "forged" not in backend_keys(stack, bucket)


class Recorder(http.server.ThreadingHTTPServer):
    """A stand-in S3 backend that records what Envoy sends it and answers 200."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                out = b"" if self.command in ("HEAD", "PUT") else b"stored bytes"
                self.send_response(200)
                self.send_header("etag", '"0123456789abcdef0123456789abcdef"')
                self.send_header("content-length", str(len(out) if self.command != "HEAD" else 12))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.shutdown()


# What the backend may receive besides what the client signed: the filter's own
# signature and envelope, framing, and Envoy's routing header.
FILTER_OWN = {"host", "authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-meta-s3crypt",
              "content-length", "x-forwarded-proto",
              # signed-chunks upstream (upstream_payload): the ciphertext's length
              "x-amz-decoded-content-length"}


def aws_chunked_payload(raw):
    """The payload of an aws-chunked body (`hex-size;chunk-signature=...` chunks)."""
    out, pos = b"", 0
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";")[0], 16)
        out += raw[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2
        if size == 0:
            return out


def test_backend_never_receives_unsigned_headers(stack, recorder):
    """Header-signed and presigned requests carrying unsigned headers of every kind: the
    backend (a recorder here, to see every header) receives the signed ones and the
    filter's own, nothing else."""
    # (The recorder stores nothing, so its GET answer has no envelope: a passthrough scope
    # lets the filter serve it.)
    envoy = stack.start_envoy(s3_port=recorder.server_address[1], plugin_extra={"passthrough_unencrypted": ["bkt"]})
    sg = signer(stack)
    host = urllib.parse.urlparse(envoy.endpoint).netloc
    unsigned = {"x-custom": "1", "user-agent": "ua", "cache-control": "no-cache", "content-type": "text/evil",
                "content-disposition": "attachment", "x-forwarded-for": "6.6.6.6", "cookie": "c=1",
                "x-minio-extract": "true", "range": "bytes=0-1", "if-none-match": "*", "expect": "100-continue"}
    signed = {"x-amz-meta-a": "1", "content-type": "text/plain", "x-amz-storage-class": "STANDARD"}
    body = b"recorded body"
    h, *_ = sg.sign("PUT", host, "/bkt/obj", headers=signed, payload_hash=hashlib.sha256(body).hexdigest())
    # (method, target, headers sent, body, names the client signed)
    cases = [("PUT", "/bkt/obj", {**{k: v for k, v in unsigned.items() if k not in signed}, **h}, body, set(signed))]
    q = sg.presign("GET", host, "/bkt/obj")
    cases.append(("GET", f"/bkt/obj?{q}", dict(unsigned), b"", set()))
    q = sg.presign("PUT", host, "/bkt/obj2")
    cases.append(("PUT", f"/bkt/obj2?{q}", {k: v for k, v in unsigned.items() if k != "expect"}, body, set()))
    for method, target, headers, b, client_signed in cases:
        before = len(recorder.requests)
        status, _, got = s3util.raw_request(envoy.endpoint, method, target, headers, b)
        assert status == 200, (method, target, status, got)
        assert len(recorder.requests) == before + 1
        _, path, received, rbody = recorder.requests[-1]
        # `Expect: 100-continue` goes upstream as exactly that (proxy_100_continue: the
        # backend asks for the body once the filter authenticated the request).
        assert received.get("expect", "100-continue") == "100-continue"
        extra = set(received) - client_signed - FILTER_OWN - {"expect"}
        assert extra == set(), (method, target, extra)
        assert "X-Amz-Signature" not in path
        if method == "PUT":
            # (aws-chunked with signed chunks: upstream_payload's default)
            stored = aws_chunked_payload(rbody)
            assert body not in rbody and len(stored) == len(body) + 28 + 156  # frame, trailer
            assert received["x-amz-decoded-content-length"] == str(len(stored))
    # The signed metadata did arrive.
    _, _, received, _ = recorder.requests[-3]
    assert received["x-amz-meta-a"] == "1" and received["content-type"] == "text/plain"
    envoy.stop()


def test_misconfigured_filter_never_serves(stack, tmp_path):
    """A filter whose configuration is rejected (no keys) makes Envoy refuse the plugin
    and exit: nothing is ever served without encryption. (The filter's HTTP context for
    an unconfigured plugin, which answers 503, is a second line behind this.)"""
    import subprocess
    import time

    from stack import envoy_binary, free_port, render_envoy_config

    port, admin = free_port(), free_port()
    render_envoy_config(tmp_path / "envoy.yaml", listener_port=port, admin_port=admin, s3_port=stack.s3_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3CRYPT_")}
    log = tmp_path / "envoy.log"
    p = subprocess.Popen([envoy_binary(), "-c", str(tmp_path / "envoy.yaml"), "--concurrency", "1",
                          "--base-id", str(free_port()), "-l", "info", "--log-path", str(log)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while p.poll() is None and time.time() < deadline:
            try:
                requests.put(f"http://127.0.0.1:{port}/b/k", data=b"plaintext", timeout=1)
                pytest.fail("a misconfigured filter served a request")
            except requests.exceptions.ConnectionError:
                time.sleep(0.1)
        assert p.poll() not in (None, 0)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    assert "configuration rejected: S3CRYPT_KEKS is not set" in log.read_text()


def test_keys_in_documents_and_listings_follow_the_key_rules(stack, bucket):
    """DeleteObjects keys and listing parameters that name keys may not walk out of the
    bucket with dot segments (a backend that maps keys to paths could follow them)."""
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="keep", Body=b"keep")
    body = b"<Delete><Object><Key>../other/k</Key></Object></Delete>"
    import base64
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    status, _, got = send(stack, "POST", f"/{bucket}", [("delete", "")], headers={"content-md5": md5}, body=body)
    assert status == 400, got
    for params in ([("prefix", "../")], [("list-type", "2"), ("start-after", "a/../../b")], [("marker", "..")]):
        status, _, got = send(stack, "GET", f"/{bucket}", params)
        assert status == 400, (params, got)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="kee")["Contents"]] == ["keep"]


def test_unrecognised_part_checksum_elements_are_refused(stack, bucket):
    """A part checksum the filter could not blank (an element with attributes) would carry
    a plaintext digest to the backend: the part list is refused instead."""
    s3 = stack.s3()
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    p = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"part")
    body = (f'<CompleteMultipartUpload><Part><ETag>{p["ETag"]}</ETag><ChecksumCRC32 a="1">AAAAAA==</ChecksumCRC32>'
            '<PartNumber>1</PartNumber></Part></CompleteMultipartUpload>').encode()
    status, _, got = send(stack, "POST", f"/{bucket}/mp", [("uploadId", up)], body=body)
    assert status == 400 and b"MalformedXML" in got, got
    # The upload is untouched and completes normally.
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"part"


def test_browser_post_upload_is_refused_clearly(stack, bucket):
    """POST Object (an HTML form upload with a policy document) is not supported: 501 with
    a message naming it, and nothing reaches the backend."""
    data = b"form field plaintext " + secrets.token_hex(8).encode()
    r = requests.post(f"{stack.endpoint}/{bucket}", files={"file": ("f.txt", data)},
                      data={"key": "posted", "policy": "e30=", "x-amz-algorithm": "AWS4-HMAC-SHA256"}, timeout=30)
    assert r.status_code == 501 and b"browser POST" in r.content and b"NotImplemented" in r.content, r.content
    assert backend_keys(stack, bucket) == []
