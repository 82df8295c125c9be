"""End to end: request behaviours real clients rely on, through real Envoy with the filter
and a real S3 server: suffix ranges (resolved by the filter, never past the stored object),
Expect: 100-continue (authenticated before the body is asked for), presigned-URL expiry,
SigV2 refused clearly, and CORS (preflights, bucket CORS configuration, CORS headers).
Stored bytes are read through the backend's S3 API (`stack.backend_s3()`)."""

import hashlib

import botocore.exceptions
import pytest

F = 65536
U64_MAX = 2**64 - 1


def pattern(n, seed=0):
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest() * 64
        block += 1
    return bytes(out[:n])


def stored_len(stack, bucket, key):
    return stack.backend_s3().head_object(Bucket=bucket, Key=key)["ContentLength"]


def error_of(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


# --- 1. Suffix ranges ---------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 100, F - 1, F + 1, 100_000, 3 * F + 7])
def test_suffix_ranges_of_small_and_large_objects(stack, bucket, size):
    """Every suffix of every length, on objects smaller than the frames a suffix used to
    be widened to (the backend refused the read past its start with a 500)."""
    s3 = stack.s3()
    data = pattern(size, seed=size)
    s3.put_object(Bucket=bucket, Key="s", Body=data)
    for n in [1, 10, size - 1, size, size + 1, F, 2 * F + 50, 10 * F, U64_MAX]:
        if n == 0:
            continue
        a = max(0, size - n)
        r = s3.get_object(Bucket=bucket, Key="s", Range=f"bytes=-{n}")
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 206, n
        assert r["Body"].read() == data[a:], n
        assert r["ContentRange"] == f"bytes {a}-{size - 1}/{size}", n
        assert r["ContentLength"] == size - a
        h = s3.head_object(Bucket=bucket, Key="s", Range=f"bytes=-{n}")
        assert h["ContentLength"] == size - a, n
    # A range past the end of the object is clamped, as S3 does.
    r = s3.get_object(Bucket=bucket, Key="s", Range=f"bytes=0-{U64_MAX}")
    assert r["Body"].read() == data
    assert error_of(lambda: s3.get_object(Bucket=bucket, Key="s", Range="bytes=-0")) == (416, "InvalidRange")
    assert stored_len(stack, bucket, "s") > size


def test_suffix_ranges_of_an_empty_object_are_416(stack, bucket):
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    for rng in ["bytes=-0", "bytes=-1", "bytes=-100000", f"bytes=-{U64_MAX}", "bytes=0-"]:
        assert error_of(lambda: s3.get_object(Bucket=bucket, Key="empty", Range=rng)) == (416, "InvalidRange"), rng
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""


def test_suffix_ranges_of_a_multipart_object(stack, bucket):
    s3 = stack.s3()
    parts = [pattern(5 << 20, 1), pattern(777, 2)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="m", UploadId=up, PartNumber=i + 1, Body=p)["ETag"]
             for i, p in enumerate(parts)]
    s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    data = b"".join(parts)
    size = len(data)
    for n in [1, 777, 778, 100_000, size, size + 1, U64_MAX]:
        a = max(0, size - n)
        r = s3.get_object(Bucket=bucket, Key="m", Range=f"bytes=-{n}")
        assert r["Body"].read() == data[a:], n
        assert r["ContentRange"] == f"bytes {a}-{size - 1}/{size}", n
    assert error_of(lambda: s3.get_object(Bucket=bucket, Key="m", Range="bytes=-0")) == (416, "InvalidRange")


# --- 2. Expect: 100-continue ----------------------------------------------------------

def _expect_put(stack, bucket, key, body, secret=None):
    """A PUT with `Expect: 100-continue` on a raw socket: the headers alone first. Returns
    the socket and the first response head (status, raw bytes) the proxy sent back."""
    import socket
    import urllib.parse
    import s3util
    u = urllib.parse.urlparse(stack.endpoint)
    ak, sk = stack.client_creds
    signer = s3util.Signer(ak, secret or sk)
    path = f"/{bucket}/{key}"
    h, *_ = signer.sign("PUT", u.netloc, path, payload_hash=hashlib.sha256(body).hexdigest())
    h["content-length"] = str(len(body))
    h["expect"] = "100-continue"  # unsigned, as SDKs send it
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    head = f"PUT {path} HTTP/1.1\r\nhost: {u.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    s.sendall(head.encode())
    return s, _read_head(s)


def _read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    status = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/") else 0
    return status, buf


def test_expect_continue_is_answered_after_authentication(stack, bucket):
    body = pattern(200_000, 3)
    # A bad signature: 403 at once, and never a 100 before it.
    s, (status, raw) = _expect_put(stack, bucket, "e", body, secret="not-the-secret")
    try:
        assert status == 403, raw
        assert b"100 Continue" not in raw
    finally:
        s.close()
    with pytest.raises(botocore.exceptions.ClientError):
        stack.backend_s3().head_object(Bucket=bucket, Key="e")
    # A good one: 100 (from the backend, after the filter forwarded the request), then 200.
    s, (status, raw) = _expect_put(stack, bucket, "e", body)
    try:
        assert status == 100, raw
        rest = raw.split(b"\r\n\r\n", 1)[1]
        s.sendall(body)
        if not rest:
            status, raw = _read_head(s)
        else:
            status = int(rest.split(b" ", 2)[1])
        assert status == 200, raw
    finally:
        s.close()
    assert stack.s3().get_object(Bucket=bucket, Key="e")["Body"].read() == body


# --- 3. Presigned-URL expiry ----------------------------------------------------------

def _xml(body, tag):
    import re
    m = re.search(rf"<{tag}>(.*?)</{tag}>".encode(), body)
    return m.group(1).decode() if m else None


def test_presigned_urls_expire_as_s3_says(stack, bucket):
    import datetime
    import urllib.parse
    import s3util
    stack.s3().put_object(Bucket=bucket, Key="p", Body=b"presigned")
    ak, sk = stack.client_creds
    signer = s3util.Signer(ak, sk)
    host = urllib.parse.urlparse(stack.endpoint).netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    path = f"/{bucket}/p"

    def get(q):
        return s3util.raw_request(stack.endpoint, "GET", f"{path}?{q}")

    # Signed two minutes ago for 60 seconds: expired (a wrong secret changes nothing).
    for s in [signer, s3util.Signer(ak, "wrong")]:
        status, _, body = get(s.presign("GET", host, path, expires=60, now=now - datetime.timedelta(seconds=120)))
        assert (status, _xml(body, "Code"), _xml(body, "Message")) == (403, "AccessDenied", "Request has expired"), body
    # Signed a week ago for a week, a minute ago for an hour: valid.
    for age, exp in [(604_700, 604_800), (60, 3600)]:
        status, _, body = get(signer.presign("GET", host, path, expires=exp, now=now - datetime.timedelta(seconds=age)))
        assert (status, body) == (200, b"presigned"), (age, exp, body)
    # Longer than a week.
    status, _, body = get(signer.presign("GET", host, path, expires=604_801))
    assert status == 400 and _xml(body, "Code") == "AuthorizationQueryParametersError", body
    assert _xml(body, "Message") == "X-Amz-Expires must be less than a week (in seconds) that is 604800"
    # The SDK's own URL, expired.
    url = stack.s3().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p"}, ExpiresIn=1)
    import time
    time.sleep(2.2)
    status, _, body = s3util.raw_request(stack.endpoint, "GET", url.split(host, 1)[1])
    assert (status, _xml(body, "Code")) == (403, "AccessDenied"), body


# --- 4. Signature Version 2 refused -----------------------------------------------------

V2_MESSAGE = "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."


def test_signature_version_2_is_refused_clearly(stack, bucket):
    import base64
    import email.utils
    import hmac
    ak, sk = stack.client_creds
    stack.s3().put_object(Bucket=bucket, Key="p", Body=b"v2")
    date = email.utils.formatdate(usegmt=True)
    sig = base64.b64encode(hmac.new(sk.encode(), f"GET\n\n\n{date}\n/{bucket}/p".encode(), "sha1").digest()).decode()
    expires = str(int(__import__("time").time()) + 300)
    qsig = base64.b64encode(hmac.new(sk.encode(), f"GET\n\n\n{expires}\n/{bucket}/p".encode(), "sha1").digest()).decode()
    import urllib.parse
    cases = [
        ("GET", f"/{bucket}/p", {"authorization": f"AWS {ak}:{sig}", "date": date}, b""),
        ("PUT", f"/{bucket}/p", {"authorization": f"AWS {ak}:{sig}", "date": date}, b"replaced"),
        ("GET", f"/{bucket}/p?AWSAccessKeyId={ak}&Expires={expires}&Signature={urllib.parse.quote(qsig, safe='')}", {}, b""),
    ]
    for method, target, headers, body in cases:
        status, _, got = __import__("s3util").raw_request(stack.endpoint, method, target, headers, body)
        assert (status, _xml(got, "Code"), _xml(got, "Message")) == (400, "InvalidRequest", V2_MESSAGE), (target, got)
    assert stack.backend_s3().head_object(Bucket=bucket, Key="p")["ContentLength"] > 2
    assert stack.s3().get_object(Bucket=bucket, Key="p")["Body"].read() == b"v2"


# --- 5. CORS ------------------------------------------------------------------------

class CorsRecorder:
    """A backend that records every request and answers as S3 does for a bucket whose
    CORS rules allow every origin (preflights and the CORS headers of other responses)."""

    def __init__(self):
        import http.server
        import threading
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                h = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append((self.command, self.path, h, body))
                self.send_response(200)
                if "origin" in h:
                    self.send_header("access-control-allow-origin", h["origin"])
                    self.send_header("vary", "Origin")
                if self.command == "OPTIONS":
                    self.send_header("access-control-allow-methods", h.get("access-control-request-method", ""))
                    if "access-control-request-headers" in h:
                        self.send_header("access-control-allow-headers", h["access-control-request-headers"])
                    self.send_header("access-control-max-age", "3000")
                self.send_header("content-length", "0")
                self.end_headers()

            do_OPTIONS = do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]


@pytest.fixture
def cors_backend(stack):
    rec = CorsRecorder()
    envoy = stack.start_envoy(s3_port=rec.port)
    yield rec, envoy
    envoy.stop()
    rec.server.shutdown()


PREFLIGHT = {"origin": "https://app.example", "access-control-request-method": "PUT",
             "access-control-request-headers": "content-type,x-amz-meta-a"}


def test_cors_preflight_is_rebuilt_from_an_allow_list(cors_backend):
    import s3util
    rec, envoy = cors_backend
    hostile = {**PREFLIGHT, "x-amz-meta-evil": "1", "x-amz-copy-source": "/bkt/secret",
               "x-http-method-override": "DELETE", "cookie": "c=1", "authorization": "AWS4-HMAC-SHA256 junk"}
    for target, upstream in [("/bkt/k", "/bkt/k"), ("/bkt/k?uploads", "/bkt/k"),
                             ("/bkt/k?uploadId=u1&partNumber=1", "/bkt/k"), ("/bkt?list-type=2", "/bkt")]:
        before = len(rec.requests)
        status, h, body = s3util.raw_request(envoy.endpoint, "OPTIONS", target, hostile)
        assert status == 200, (target, body)
        assert h["access-control-allow-origin"] == "https://app.example"
        assert h["access-control-allow-methods"] == "PUT"
        assert h["access-control-allow-headers"] == "content-type,x-amz-meta-a"
        assert len(rec.requests) == before + 1
        method, path, got, rbody = rec.requests[-1]
        assert (method, path, rbody) == ("OPTIONS", upstream, b""), target
        assert set(got) <= {"host", "origin", "access-control-request-method", "access-control-request-headers",
                            "x-forwarded-proto", "content-length", "x-request-id", "x-envoy-expected-rq-timeout-ms"}, got
        assert got.get("content-length", "0") == "0"


def test_options_that_are_not_preflights_are_refused(cors_backend):
    import s3util
    rec, envoy = cors_backend
    before = len(rec.requests)
    for headers, body in [(PREFLIGHT, b"<Delete><Object><Key>k</Key></Object></Delete>"),
                          ({**PREFLIGHT, "content-length": "5"}, b"abcde"),
                          ({"access-control-request-method": "GET"}, b""),
                          ({"origin": "https://app.example"}, b""),
                          ({**PREFLIGHT, "access-control-request-method": "PATCH"}, b"")]:
        status, _, got = s3util.raw_request(envoy.endpoint, "OPTIONS", "/bkt/k", headers, body)
        assert status == 400, (headers, got)
    assert len(rec.requests) == before


def test_cors_headers_of_ordinary_responses_come_back(cors_backend, stack):
    import s3util
    rec, envoy = cors_backend
    signer = s3util.Signer(*stack.client_creds)
    status, h, _ = s3util.signed_request(envoy.endpoint, signer, "GET", "/bkt", params=[("list-type", "2")],
                                         unsigned={"origin": "https://app.example"})
    assert h.get("access-control-allow-origin") == "https://app.example", (status, h)
    assert h.get("vary") == "Origin"
    assert rec.requests[-1][2]["origin"] == "https://app.example"


def test_bucket_cors_configuration_passes(stack, bucket):
    """PutBucketCors/GetBucketCors/DeleteBucketCors with their XML document, against the
    real backend (skipped where the backend has no CORS API)."""
    s3 = stack.s3()
    rules = {"CORSRules": [{"AllowedMethods": ["GET", "PUT"], "AllowedOrigins": ["https://app.example"],
                            "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 300}]}
    try:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=rules)
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] in ("NotImplemented", "MethodNotAllowed"):
            pytest.skip(f"the backend has no bucket CORS API: {e}")
        raise
    got = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert got[0]["AllowedOrigins"] == ["https://app.example"]
    import requests
    r = requests.options(f"{stack.endpoint}/{bucket}/k", headers={"Origin": "https://app.example",
                                                                  "Access-Control-Request-Method": "PUT"})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    # A normal (signed) GET from that origin: RGW's CORS headers come back with the
    # decrypted object.
    data = pattern(100_000, 7)
    s3.put_object(Bucket=bucket, Key="k", Body=data)

    def origin(request, **_):
        request.headers["Origin"] = "https://app.example"
    s3.meta.events.register("before-sign.s3.GetObject", origin)
    g = s3.get_object(Bucket=bucket, Key="k")
    assert g["ResponseMetadata"]["HTTPHeaders"].get("access-control-allow-origin") == "https://app.example"
    assert "etag" in g["ResponseMetadata"]["HTTPHeaders"].get("access-control-expose-headers", "").lower()
    assert g["Body"].read() == data
    s3.delete_bucket_cors(Bucket=bucket)


def test_concurrent_connections_spread_over_every_worker(stack, bucket):
    """The local listener balances connections over Envoy's workers (`exact_balance`; the
    stack's Envoy runs 2): 4 and then 16 open client connections land evenly, so that
    concurrent uploads, whose crypto runs on the worker of their connection, use both."""
    import re
    import socket
    import urllib.parse

    import requests
    envoy = stack.start_envoy()  # no other test's connections
    url = urllib.parse.urlparse(envoy.endpoint)
    socks = []
    try:
        for n in (4, 16):
            while len(socks) < n:
                s = socket.create_connection((url.hostname, url.port))
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200"), "healthz"
                socks.append(s)
            stats = requests.get(envoy.admin_url + "/stats?filter=downstream_cx_active", timeout=5).text
            per_worker = [int(v) for v in re.findall(
                rf"listener\.[0-9.]+_{url.port}\.worker_\d+\.downstream_cx_active: (\d+)", stats)]
            assert len(per_worker) == 2, stats
            assert sum(per_worker) == n and max(per_worker) - min(per_worker) <= 1, (n, per_worker)
    finally:
        for s in socks:
            s.close()
        envoy.stop()
