"""An independent Python model of how the Python predecessor proxy (s3proxy-python 2026.2.x)
stores objects, written only from /work/shared/PREDECESSOR-FORMAT.md and sharing no code with
the Rust side. End-to-end tests use it to put predecessor-format objects straight into the
backend (a boto3 client talking to the S3 server, not through Envoy), which the Rust tool and
filter must then read; `read` is a reader of the same format, to check the writers.

Layouts:
  single       one segment, key in user metadata `isec` (+ `client-etag`, `plaintext-size`).
  streaming    a backend multipart upload of fixed-size plaintext parts, one segment each; no
               `isec` header, the DEK only in the manifest (`ip` empty, `pn` = backend part).
  client MPU   client part k -> backend parts (k-1)*20+1 ...; `isec` on the object; manifest
               `pn` = client part number, `ip` = its backend parts.
A segment is nonce(12) || AES-256-GCM ciphertext || tag(16), without associated data.

Choices where the format notes are silent (readers must not depend on them):
  * ETags in manifests are stored without the surrounding quotes.
  * A client part's own "etag" is the hex MD5 of its plaintext (what a client saw for an
    UploadPart); its "md5" is the same value. "ip" entries carry the backend part ETag.
  * Manifest JSON is compact (no spaces), keys in the documented order.
  * The streaming and client layouts write no `client-etag` / `plaintext-size` metadata.
  * An empty streaming PUT is one backend part holding a 28-byte segment.
  * Order of writes on complete: CompleteMultipartUpload, manifest, delete upload state.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
from typing import Callable, Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding, aes_key_wrap_with_padding

INTERNAL_PREFIX = ".s3proxy-internal/"
NONCE_LEN = 12
TAG_LEN = 16
OVERHEAD = NONCE_LEN + TAG_LEN  # 28 bytes per segment
MAX_BACKEND_PARTS_PER_CLIENT_PART = 20
MANIFEST_MAX_DECOMPRESSED = 10 * 1024 * 1024  # the predecessor's cap
MIB = 1024 * 1024

# A split of one client part into backend piece sizes: a list of sizes per client part
# (None = one piece), or a function (client_part_number, data) -> list of sizes.
Split = Sequence[Sequence[int] | None] | Callable[[int, bytes], Sequence[int]]


# --- keys and segments -------------------------------------------------------------------

def kek(key_string: str) -> bytes:
    """The key-encryption key: SHA-256 of the UTF-8 key string (no salt, no KDF)."""
    return hashlib.sha256(key_string.encode("utf-8")).digest()


def new_dek() -> bytes:
    """A fresh 32-byte data key (one per single PUT or per multipart upload)."""
    return os.urandom(32)


def wrap_dek(kek: bytes, dek: bytes) -> str:
    """RFC 5649 wrap of the DEK under the KEK as standard padded base64 (40 bytes -> 56 chars)."""
    return base64.b64encode(aes_key_wrap_with_padding(kek, dek)).decode("ascii")


def unwrap_dek(kek: bytes, wrapped: str) -> bytes:
    """Inverse of wrap_dek; raises cryptography's InvalidUnwrap on a wrong KEK."""
    return aes_key_unwrap_with_padding(kek, base64.b64decode(wrapped, validate=True))


def segment(dek: bytes, plaintext: bytes, nonce: bytes | None = None) -> bytes:
    """nonce(12) || GCM ciphertext || tag(16), no AAD; a random nonce when none is given."""
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    assert len(nonce) == NONCE_LEN
    return nonce + AESGCM(dek).encrypt(nonce, plaintext, None)


def open_segment(dek: bytes, seg: bytes) -> bytes:
    """Decrypt one segment with the nonce stored in it (raises InvalidTag if tampered)."""
    return AESGCM(dek).decrypt(seg[:NONCE_LEN], seg[NONCE_LEN:], None)


def multipart_nonce(backend_upload_id: str, backend_part_number: int) -> bytes:
    """Nonce of a backend part: first 12 bytes of SHA-256 of "{upload_id}{part_number}"."""
    return hashlib.sha256(f"{backend_upload_id}{backend_part_number}".encode("utf-8")).digest()[:NONCE_LEN]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- manifest and internal objects -------------------------------------------------------

def manifest_key(key: str) -> str:
    """Where the manifest of `key` lives (same bucket)."""
    return f"{INTERNAL_PREFIX}{key}.meta"


def upload_state_key(key: str, upload_id: str) -> str:
    """The in-flight upload state object, JSON {"dek": wrapped}."""
    return f"{INTERNAL_PREFIX}{key}.upload-{upload_id}"


def encode_manifest(doc: dict) -> bytes:
    """Manifest body: ASCII base64 of gzip of compact JSON."""
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(gzip.compress(raw))


def decode_manifest(body: bytes) -> dict:
    """Inverse of encode_manifest, with the predecessor's 10 MiB decompressed-size cap."""
    with gzip.GzipFile(fileobj=io.BytesIO(base64.b64decode(body, validate=True))) as f:
        raw = f.read(MANIFEST_MAX_DECOMPRESSED + 1)
    if len(raw) > MANIFEST_MAX_DECOMPRESSED:
        raise ValueError("manifest over 10 MiB decompressed")
    return json.loads(raw)


def _unquote(etag: str) -> str:
    return etag.strip('"')


def _put_manifest(s3, bucket: str, key: str, doc: dict) -> None:
    s3.put_object(Bucket=bucket, Key=manifest_key(key), Body=encode_manifest(doc))


# --- writers -----------------------------------------------------------------------------

def put_single(s3, bucket: str, key: str, plaintext: bytes, key_string: str, meta_name: str = "isec",
               extra_metadata: dict | None = None, content_type: str | None = None) -> dict:
    """The "single" layout (a signed PUT of at most 8 MiB, or a CopyObject result): one
    segment with a random nonce and the wrapped DEK in user metadata `meta_name`."""
    dek = new_dek()
    wrapped = wrap_dek(kek(key_string), dek)
    body = segment(dek, plaintext)
    meta = {**(extra_metadata or {}), meta_name: wrapped,
            "client-etag": md5_hex(plaintext), "plaintext-size": str(len(plaintext))}
    kw = {"ContentType": content_type} if content_type else {}
    r = s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta, **kw)
    return {"dek": dek, "wrapped": wrapped, "stored_size": len(body), "plaintext_size": len(plaintext),
            "plaintext_md5": md5_hex(plaintext), "backend_etag": _unquote(r["ETag"]), "metadata": meta}


def _upload(s3, bucket: str, key: str, pieces: list[tuple[int, bytes]], dek: bytes, wrapped: str,
            metadata: dict) -> tuple[str, dict[int, str], str]:
    """Backend multipart upload of (backend part number, plaintext) pieces, one segment each,
    with the upload-state object present while the upload runs. The caller writes the
    manifest; returns (upload id, {part number: unquoted ETag}, object ETag)."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]
    state = upload_state_key(key, upload_id)
    s3.put_object(Bucket=bucket, Key=state, Body=json.dumps({"dek": wrapped}).encode())
    etags: dict[int, str] = {}
    try:
        for pn, data in pieces:
            seg = segment(dek, data, multipart_nonce(upload_id, pn))
            etags[pn] = _unquote(s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                                PartNumber=pn, Body=seg)["ETag"])
        done = s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": pn, "ETag": f'"{e}"'} for pn, e in etags.items()]})
    except BaseException:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        s3.delete_object(Bucket=bucket, Key=state)
        raise
    return upload_id, etags, _unquote(done["ETag"])


def put_streaming(s3, bucket: str, key: str, plaintext: bytes, key_string: str,
                  part_size: int = 8 * MIB) -> dict:
    """The layout of a larger or streaming PUT: backend parts 1..n of `part_size` plaintext
    bytes (the last may be shorter), no `isec` header, DEK only in the manifest. S3 refuses
    non-last parts under 5 MiB, so multi-part objects need part_size >= 5 MiB."""
    dek = new_dek()
    wrapped = wrap_dek(kek(key_string), dek)
    chunks = [plaintext[i:i + part_size] for i in range(0, len(plaintext), part_size)] or [b""]
    pieces = list(enumerate(chunks, start=1))
    upload_id, etags, etag = _upload(s3, bucket, key, pieces, dek, wrapped, {})
    doc = {"v": 1, "pc": len(pieces), "ts": len(plaintext), "dek": wrapped,
           "parts": [{"pn": pn, "ps": len(d), "cs": len(d) + OVERHEAD, "etag": etags[pn],
                      "md5": md5_hex(d), "ip": []} for pn, d in pieces]}
    _put_manifest(s3, bucket, key, doc)
    s3.delete_object(Bucket=bucket, Key=upload_state_key(key, upload_id))
    return {"dek": dek, "wrapped": wrapped, "upload_id": upload_id, "manifest": doc, "backend_etag": etag,
            "stored_size": len(plaintext) + OVERHEAD * len(pieces), "plaintext_size": len(plaintext),
            "plaintext_md5": md5_hex(plaintext)}


def _split_sizes(split: Split | None, k: int, data: bytes) -> list[int]:
    if split is None:
        sizes = None
    elif callable(split):
        sizes = split(k, data)
    else:
        sizes = split[k - 1] if k - 1 < len(split) else None
    sizes = [len(data)] if sizes is None else list(sizes)
    if sum(sizes) != len(data) or not 1 <= len(sizes) <= MAX_BACKEND_PARTS_PER_CLIENT_PART:
        raise ValueError(f"client part {k}: split {sizes} does not cover {len(data)} bytes in 1..20 pieces")
    return sizes


def put_client_multipart(s3, bucket: str, key: str, client_parts: list[bytes], key_string: str,
                         split: Split | None = None, meta_name: str = "isec") -> dict:
    """The layout of a client multipart upload of `client_parts` (client parts 1..n): client
    part k becomes backend parts (k-1)*20+1, (k-1)*20+2, ... - one by default, or the piece
    sizes `split` gives (see Split). Every backend part but the object's last must be at
    least 5 MiB or the backend refuses the Complete."""
    dek = new_dek()
    wrapped = wrap_dek(kek(key_string), dek)
    pieces: list[tuple[int, bytes]] = []
    layout: list[tuple[int, bytes, list[tuple[int, bytes]]]] = []  # (client pn, data, backend pieces)
    for k, data in enumerate(client_parts, start=1):
        own, off = [], 0
        for j, size in enumerate(_split_sizes(split, k, data)):
            own.append(((k - 1) * MAX_BACKEND_PARTS_PER_CLIENT_PART + j + 1, data[off:off + size]))
            off += size
        pieces += own
        layout.append((k, data, own))
    upload_id, etags, etag = _upload(s3, bucket, key, pieces, dek, wrapped, {meta_name: wrapped})
    parts = []
    for k, data, own in layout:
        ip = [{"ipn": pn, "ps": len(d), "cs": len(d) + OVERHEAD, "etag": etags[pn]} for pn, d in own]
        parts.append({"pn": k, "ps": len(data), "cs": sum(p["cs"] for p in ip), "etag": md5_hex(data),
                      "md5": md5_hex(data), "ip": ip})
    total = sum(len(d) for d in client_parts)
    doc = {"v": 1, "pc": len(client_parts), "ts": total, "dek": wrapped, "parts": parts}
    _put_manifest(s3, bucket, key, doc)
    s3.delete_object(Bucket=bucket, Key=upload_state_key(key, upload_id))
    return {"dek": dek, "wrapped": wrapped, "upload_id": upload_id, "manifest": doc, "backend_etag": etag,
            "stored_size": total + OVERHEAD * len(pieces), "plaintext_size": total,
            "plaintext_md5": md5_hex(b"".join(client_parts))}


# --- reader ------------------------------------------------------------------------------

def _get(s3, bucket: str, key: str):
    try:
        return s3.get_object(Bucket=bucket, Key=key)
    except s3.exceptions.NoSuchKey:
        return None


def read(s3, bucket: str, key: str, key_string: str, meta_name: str = "isec") -> bytes:
    """Plaintext of `key` as the predecessor reads it: the manifest if there is one, else
    one segment if the object has the `meta_name` header, else the body as it is."""
    obj = s3.get_object(Bucket=bucket, Key=key)
    body = obj["Body"].read()
    m = _get(s3, bucket, manifest_key(key))
    if m is not None:
        doc = decode_manifest(m["Body"].read())
        dek = unwrap_dek(kek(key_string), doc["dek"])
        sizes = []
        for part in sorted(doc["parts"], key=lambda p: p["pn"]):
            ip = sorted(part["ip"], key=lambda p: p["ipn"])
            sizes += [p["cs"] for p in ip] if ip else [part["cs"]]
        if sum(sizes) != len(body):
            raise ValueError(f"manifest segments total {sum(sizes)} bytes, object has {len(body)}")
        out, off = [], 0
        for cs in sizes:
            out.append(open_segment(dek, body[off:off + cs]))
            off += cs
        return b"".join(out)
    wrapped = obj.get("Metadata", {}).get(meta_name)
    if wrapped is not None:
        return open_segment(unwrap_dek(kek(key_string), wrapped), body)
    return body
