"""Hand-built S3 requests for the end-to-end tests: SigV4 signing (header and presigned),
aws-chunked bodies with chunk signatures and trailers, as real SDKs send them. The tests use
these where the stock clients cannot be told to send something (a wrong hash, a bad chunk
signature, a trailer over plain HTTP)."""

import base64
import datetime
import hashlib
import hmac
import http.client
import urllib.parse
import zlib

import requests

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret, date, region="us-east-1"):
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, "s3")
    return _hmac(k, "aws4_request")


def _enc(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


def canonical_query(params):
    return "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(params))


class Signer:
    def __init__(self, access_key, secret, region="us-east-1"):
        self.ak, self.sk, self.region = access_key, secret, region

    def sign(self, method, host, path, params=(), headers=None, payload_hash=EMPTY_SHA256, now=None):
        """Returns headers (dict) with Authorization for a request."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        h = {k.lower(): str(v) for k, v in (headers or {}).items()}
        h["host"] = host
        h["x-amz-date"] = amz_date
        h["x-amz-content-sha256"] = payload_hash
        signed = sorted(h)
        canon = "\n".join([
            method,
            _enc(path, safe="/-_.~"),
            canonical_query(params),
            "".join(f"{k}:{' '.join(h[k].split())}\n" for k in signed),
            ";".join(signed),
            payload_hash,
        ])
        scope = f"{date}/{self.region}/s3/aws4_request"
        sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canon.encode()).hexdigest()}"
        key = signing_key(self.sk, date, self.region)
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        h["authorization"] = f"AWS4-HMAC-SHA256 Credential={self.ak}/{scope}, SignedHeaders={';'.join(signed)}, Signature={sig}"
        del h["host"]
        return h, sig, key, amz_date, scope

    def presign(self, method, host, path, expires=300, now=None, extra=(), headers=None):
        """Presigned query string. `headers` (name -> value) are signed; `host` is signed
        unless `headers` is given without it."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        scope = f"{date}/{self.region}/s3/aws4_request"
        h = {"host": host} if headers is None else {k.lower(): v for k, v in headers.items()}
        signed = sorted(h)
        params = list(extra) + [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", f"{self.ak}/{scope}"),
            ("X-Amz-Date", amz_date),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", ";".join(signed)),
        ]
        canon = "\n".join([method, _enc(path, safe="/-_.~"), canonical_query(params),
                           "".join(f"{k}:{h[k]}\n" for k in signed), ";".join(signed), "UNSIGNED-PAYLOAD"])
        sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canon.encode()).hexdigest()}"
        sig = hmac.new(signing_key(self.sk, date, self.region), sts.encode(), hashlib.sha256).hexdigest()
        return canonical_query(params + [("X-Amz-Signature", sig)])


def raw_request(endpoint, method, raw_target, headers=None, body=b""):
    """Sends a request with the target exactly as given (no dot-segment or escape
    normalisation, unlike requests/urllib3): (status, headers dict, body)."""
    u = urllib.parse.urlparse(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.putrequest(method, raw_target, skip_host=True, skip_accept_encoding=True)
        h = dict(headers or {})
        h.setdefault("host", u.netloc)
        if body or method in ("PUT", "POST"):
            h["content-length"] = str(len(body))
        for k, v in h.items():
            conn.putheader(k, v)
        conn.endheaders(body if body else None)
        r = conn.getresponse()
        data = r.read() if method != "HEAD" else b""
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def signed_request(endpoint, signer, method, path, params=(), headers=None, body=b"", raw_path=None, unsigned=None):
    """A correctly signed request (every given header signed, payload hash of `body`).
    `path` is the decoded path that is signed; `raw_path` what is sent (default: `path`
    encoded); `unsigned` headers are added after signing."""
    host = urllib.parse.urlparse(endpoint).netloc
    h, *_ = signer.sign(method, host, path, params=params, headers=headers,
                        payload_hash=hashlib.sha256(body).hexdigest())
    h.update(unsigned or {})
    target = raw_path or _enc(path, safe="/-_.~")
    q = canonical_query(params)
    return raw_request(endpoint, method, target + ("?" + q if q else ""), h, body)


def chunked_signed_body(data, chunk, seed_sig, key, amz_date, scope, corrupt_chunk=None):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD body."""
    out, prev = b"", seed_sig
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    for n, piece in enumerate(pieces):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY_SHA256, hashlib.sha256(piece).hexdigest()])
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        if corrupt_chunk == n:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        out += f"{len(piece):x};chunk-signature={sig}\r\n".encode() + piece + b"\r\n"
        prev = sig
    return out


def crc32_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def chunked_unsigned_trailer_body(data, chunk, trailer_value):
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER body with an x-amz-checksum-crc32 trailer."""
    out = b""
    for i in range(0, len(data), chunk):
        piece = data[i:i + chunk]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    out += b"0\r\n" + f"x-amz-checksum-crc32:{trailer_value}\r\n\r\n".encode()
    return out


def put_chunked(endpoint, signer, bucket, key, data, mode="signed", chunk=65536, corrupt_chunk=None, trailer=None):
    """PUT with an aws-chunked body; returns the requests.Response."""
    host = urllib.parse.urlparse(endpoint).netloc
    path = f"/{bucket}/{key}"
    if mode == "signed":
        payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
        base = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))}
        # The content-length of the encoded body must be known to sign it; compute with a dummy signature.
        dummy = chunked_signed_body(data, chunk, "0" * 64, b"k" * 32, "x", "y")
        base["content-length"] = str(len(dummy))
        h, sig, k, amz_date, scope = signer.sign("PUT", host, path, headers=base, payload_hash=payload)
        body = chunked_signed_body(data, chunk, sig, k, amz_date, scope, corrupt_chunk)
    else:
        payload = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        value = trailer if trailer is not None else crc32_b64(data)
        body = chunked_unsigned_trailer_body(data, chunk, value)
        base = {
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
            "x-amz-trailer": "x-amz-checksum-crc32",
            "content-length": str(len(body)),
        }
        h, *_ = signer.sign("PUT", host, path, headers=base, payload_hash=payload)
    return requests.put(endpoint + path, data=body, headers=h, timeout=60)
