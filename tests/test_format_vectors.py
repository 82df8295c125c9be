"""An independent implementation of docs/FORMAT.md (Python `cryptography`), checked
against the committed test vectors that the Rust code writes.

If the Rust implementation and this reading of the document ever disagree, one of them
does not follow the specification."""

import base64
import hashlib
import json
import pathlib
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from cryptography.exceptions import InvalidTag

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "vectors" / "format-v1.json"
F, M, O, H = 65536, 1024, 28, 16
# Cipher suites (envelope `s`): 1 AES-256-GCM, 2 ChaCha20-Poly1305 (RFC 8439).
SUITES = {1: AESGCM, 2: ChaCha20Poly1305}


def aead(suite, dek):
    return SUITES[suite](dek)


def parse_envelope(value):
    fields = [f.split("=", 1) for f in value.split(";")]
    assert [k for k, _ in fields] == [k for k in "v s t k w l m c a".split() if k in dict(fields)], "field order"
    return dict(fields)


def envelope_aad(env):
    aad = b"s3crypt-envelope" + bytes([1, int(env["s"]), 0 if env["t"] == "s" else 1])
    kid = env["k"].encode()
    aad += bytes([len(kid)]) + kid + base64.b64decode(env["w"])
    aad += (b"\x01" + struct.pack(">Q", int(env["l"]))) if "l" in env else b"\x00"
    aad += (b"\x01" + bytes.fromhex(env["m"])) if "m" in env else b"\x00"
    if "c" in env:
        h, v = env["c"].split(":", 1)
        aad += b"\x01" + struct.pack(">H", len(h)) + h.encode() + struct.pack(">H", len(v)) + v.encode()
    else:
        aad += b"\x00"
    return aad


def frame_aad(suite, layout, part, i, frames, plen):
    return b"s3crypt" + bytes([1, suite, layout]) + struct.pack(">IQ", part, i) + bytes([i + 1 == frames]) + struct.pack(">Q", plen)


def decrypt_stream(suite, dek, layout, part, plen, stored):
    gcm = aead(suite, dek)
    if layout == "single":
        frames, flen, pos, lay = -(-plen // F), F, 0, 0
    else:
        assert stored[:4] == b"s3cP"
        assert struct.unpack(">IQ", stored[4:16]) == (part, plen)
        frames, flen, pos, lay = M, max(1, -(-plen // M)), H, 1
    out = b""
    for i in range(frames):
        n = max(0, min(flen, plen - i * flen))
        frame = stored[pos : pos + O + n]
        out += gcm.decrypt(frame[:12], frame[12:], frame_aad(suite, lay, part, i, frames, plen))
        pos += O + n
    assert pos == len(stored)
    return out


@pytest.fixture(scope="module")
def vectors():
    return json.loads(VECTORS.read_text())


def test_key_wrap(vectors):
    kek, dek = bytes.fromhex(vectors["kek"]), bytes.fromhex(vectors["dek"])
    assert aes_key_unwrap_with_padding(kek, bytes.fromhex(vectors["wrapped_dek"])) == dek


def test_cases_decrypt_independently(vectors):
    kek = bytes.fromhex(vectors["kek"])
    for case in vectors["cases"]:
        env = parse_envelope(case["envelope_header"])
        suite = case["suite"]
        assert env["v"] == "1" and env["s"] == str(suite) and env["k"] == vectors["kek_id"]
        dek = aes_key_unwrap_with_padding(kek, base64.b64decode(env["w"]))
        tag = base64.b64decode(env["a"])
        aead(suite, dek).decrypt(tag[:12], tag[12:], envelope_aad(env))  # raises if wrong
        plen = case["plaintext_len"]
        if case["layout"] == "single":
            assert int(env["l"]) == plen
            assert case["stored_len"] == plen + O * -(-plen // F)
        else:
            assert case["stored_len"] == plen + H + M * O
        # Rebuild the stored bytes from the documented nonce rule and compare.
        base = bytes.fromhex(vectors["frame_nonce_base"])
        gcm = aead(suite, dek)
        layout = 0 if case["layout"] == "single" else 1
        part = case["part"]
        if layout == 0:
            frames, flen, stored = -(-plen // F), F, b""
        else:
            frames, flen, stored = M, max(1, -(-plen // M)), b"s3cP" + struct.pack(">IQ", part, plen)
        pt = bytes(i % 251 for i in range(plen)) if case["name"].endswith("single-two-frames") else (
            bytes(i % 7 for i in range(plen)) if layout else b"s3crypt test vector"[:plen])
        assert hashlib.sha256(pt).hexdigest() == case["plaintext_sha256"]
        for i in range(frames):
            nonce = base[:4] + struct.pack(">Q", (int.from_bytes(base[4:], "big") + i) % 2**64)
            chunk = pt[min(i * flen, plen): min((i + 1) * flen, plen)]
            stored += nonce + gcm.encrypt(nonce, chunk, frame_aad(suite, layout, part, i, frames, plen))
        assert len(stored) == case["stored_len"]
        assert hashlib.sha256(stored).hexdigest() == case["stored_sha256"]
        assert case["stored_hex"].rstrip(".") == stored.hex()[: len(case["stored_hex"].rstrip("."))]
        assert decrypt_stream(suite, dek, case["layout"], part, plen, stored) == pt
        # The other suite's AEAD does not open these frames.
        if plen:
            with pytest.raises(InvalidTag):
                decrypt_stream(3 - suite, dek, case["layout"], part, plen, stored)
        if "m" in env:
            assert env["m"] == hashlib.md5(pt).hexdigest()


def test_both_suites_have_vectors(vectors):
    names = {(c["suite"], c["name"].split("/")[-1]) for c in vectors["cases"]}
    for base in ["single-empty", "single-short", "single-two-frames", "part-2-of-3000"]:
        assert {(1, base), (2, base)} <= names


@pytest.mark.parametrize("name", ["single-short", "chacha20-poly1305/single-short"])
def test_tampering_is_detected(vectors, name):
    kek = bytes.fromhex(vectors["kek"])
    case = next(c for c in vectors["cases"] if c["name"] == name)
    env = parse_envelope(case["envelope_header"])
    dek = aes_key_unwrap_with_padding(kek, base64.b64decode(env["w"]))
    stored = bytearray(bytes.fromhex(case["stored_hex"]))
    stored[20] ^= 1
    with pytest.raises(InvalidTag):
        decrypt_stream(case["suite"], dek, "single", 0, case["plaintext_len"], bytes(stored))
