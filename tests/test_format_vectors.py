"""An independent implementation of docs/FORMAT.md (Python `cryptography`), checked
against the committed test vectors that the Rust code writes.

If the Rust implementation and this reading of the document ever disagree, one of them
does not follow the specification."""

import base64
import hashlib
import json
import pathlib
import struct
import zlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from cryptography.exceptions import InvalidTag

VECTOR_DIR = pathlib.Path(__file__).resolve().parent.parent / "docs" / "vectors"
VECTOR_FILES = {v: VECTOR_DIR / f"format-v{v}.json" for v in (1, 2, 3)}
SECRETS_LEN = 128
F, M, O, H = 65536, 1024, 28, 16
# Cipher suites (envelope `s`): 1 AES-256-GCM, 2 ChaCha20-Poly1305 (RFC 8439).
SUITES = {1: AESGCM, 2: ChaCha20Poly1305}
# Frame layouts (AAD byte 9) and the part header magic of the two part layouts.
LAYOUTS = {"single": 0, "part": 1, "final": 2, "end": 3, "closing": 4, "table": 5, "trailer": 6}
# Version 3 single objects end with a sealed trailer: nonce, a 128-byte secrets block, tag.
TRAILER_LEN = 12 + SECRETS_LEN + 16
MAGIC = {"part": b"s3cP", "final": b"s3cF", "end": b"s3cE", "closing": b"s3cC"}
# The end part: one frame sealing the part table (`28,688 - 16 - 28` bytes).
END_SEALED = 28688 - H - O
END_VECTOR_LENGTHS = [5 << 20, 5 << 20, 6 << 20]  # the parts before `end-4-after-3-parts`
# A closing part: 512 frames of plaintext, then one table frame of `28,688 - 16 - 513 * 28`
# sealed bytes listing every part (the closing one last).
CLOSING_FRAMES = M // 2
CLOSING_SEALED = 28688 - H - (CLOSING_FRAMES + 1) * O
CLOSING_VECTOR_LENGTHS = [5 << 20, 5 << 20, 1000]  # the parts of `closing-3-of-1000`
# The multipart MD5 the version 2 tables of the `-etag` cases seal.
VECTOR_MULTIPART_MD5 = bytes(range(0xC0, 0xD0))


def end_table(lengths, size=END_SEALED, md5=None):
    """The end part's sealed bytes: u8 1, u32 parts, u32 runs, (u32 count, u64 length) per
    run of equal lengths, zeros; version 2 (with `md5`, the object's multipart MD5): u8 2,
    the two counts, the MD5, the runs."""
    runs = []
    for n in lengths:
        if runs and runs[-1][1] == n:
            runs[-1][0] += 1
        else:
            runs.append([1, n])
    head = bytes([1 if md5 is None else 2]) + struct.pack(">II", len(lengths), len(runs)) + (md5 or b"")
    t = head + b"".join(struct.pack(">IQ", c, n) for c, n in runs)
    return t + bytes(size - len(t))


def geometry(layout, plen):
    """(frames, plaintext bytes per frame) of a stream."""
    if layout == "single":
        return -(-plen // F), F
    if layout == "end":
        return 1, END_SEALED
    if layout == "closing":
        return CLOSING_FRAMES, max(1, -(-plen // CLOSING_FRAMES))
    return M, max(1, -(-plen // M))


def aead(suite, dek):
    return SUITES[suite](dek)


def parse_envelope(value):
    fields = [f.split("=", 1) for f in value.split(";")]
    assert [k for k, _ in fields] == [k for k in "v s t k w l m c a e".split() if k in dict(fields)], "field order"
    env = dict(fields)
    assert ("e" in env) == (env["v"] in ("2", "3")) and ("a" in env) == (env["v"] == "1")
    assert env["v"] != "3" or env["t"] == "s", "version 3 is for single objects only"
    return env


def envelope_aad(env):
    version = int(env["v"])
    aad = b"s3crypt-envelope" + bytes([version, int(env["s"]), 0 if env["t"] == "s" else 1])
    kid = env["k"].encode()
    aad += bytes([len(kid)]) + kid + base64.b64decode(env["w"])
    aad += (b"\x01" + struct.pack(">Q", int(env["l"]))) if "l" in env else b"\x00"
    if version in (2, 3):
        return aad
    aad += (b"\x01" + bytes.fromhex(env["m"])) if "m" in env else b"\x00"
    if "c" in env:
        h, v = env["c"].split(":", 1)
        aad += b"\x01" + struct.pack(">H", len(h)) + h.encode() + struct.pack(">H", len(v)) + v.encode()
    else:
        aad += b"\x00"
    return aad


def frame_aad(suite, layout, part, i, frames, plen):
    return b"s3crypt" + bytes([1, suite, layout]) + struct.pack(">IQ", part, i) + bytes([i + 1 == frames]) + struct.pack(">Q", plen)


def read_secrets(secrets):
    """The secrets block of a version 2/3 envelope or of a trailer: {"md5", "checksum"}."""
    flags, md5 = secrets[0], secrets[1:17]
    hl = secrets[17]
    h = secrets[18:18 + hl]
    vl = secrets[18 + hl]
    v = secrets[19 + hl:19 + hl + vl]
    assert len(secrets) == SECRETS_LEN and flags in (0, 1, 2, 3) and not any(secrets[19 + hl + vl:])
    assert flags & 1 or not any(md5)
    return {"md5": md5.hex() if flags & 1 else None, "checksum": (h.decode(), v.decode()) if flags & 2 else None}


def open_trailer(suite, dek, plen, trailer):
    """A version 3 single object's trailer: the AAD of frame `frames` (just after the last)
    with layout 6, final flag 1 and the stream's length; it must hold the MD5."""
    frames = -(-plen // F)
    assert len(trailer) == TRAILER_LEN
    sealed = aead(suite, dek).decrypt(trailer[:12], trailer[12:], frame_aad(suite, 6, 0, frames, frames + 1, plen))
    d = read_secrets(sealed)
    assert d["md5"] is not None
    return d


def decrypt_stream(suite, dek, layout, part, plen, stored):
    gcm = aead(suite, dek)
    frames, flen = geometry(layout, plen)
    lay, pos = LAYOUTS[layout], 0
    if layout != "single":
        assert stored[:4] == MAGIC[layout]
        assert struct.unpack(">IQ", stored[4:16]) == (part, plen)
        pos = H
    out = b""
    for i in range(frames):
        n = max(0, min(flen, plen - i * flen))
        frame = stored[pos : pos + O + n]
        out += gcm.decrypt(frame[:12], frame[12:], frame_aad(suite, lay, part, i, frames, plen))
        pos += O + n
    if layout == "closing":
        # The table frame: its AAD names the part (layout 5) but not the part's length.
        frame = stored[pos : pos + O + CLOSING_SEALED]
        table = gcm.decrypt(frame[:12], frame[12:], frame_aad(suite, 5, part, 0, 1, CLOSING_SEALED))
        assert struct.unpack(">II", table[1:9])[0] == part and table[0] in (1, 2)
        pos += O + CLOSING_SEALED
    assert pos == len(stored)
    return out


def open_envelope(suite, dek, env):
    """Checks the envelope under the DEK; returns its digests {"md5": hex, "checksum": (h, v)}
    (version 2: decrypted from the sealed block; version 1: the clear fields)."""
    if env["v"] == "1":
        tag = base64.b64decode(env["a"])
        assert aead(suite, dek).decrypt(tag[:12], tag[12:], envelope_aad(env)) == b""  # raises if wrong
        return {"md5": env.get("m"), "checksum": tuple(env["c"].split(":", 1)) if "c" in env else None}
    e = base64.b64decode(env["e"])
    assert len(e) == 12 + SECRETS_LEN + 16
    return read_secrets(aead(suite, dek).decrypt(e[:12], e[12:], envelope_aad(env)))


@pytest.fixture(scope="module", params=[1, 2, 3])
def vectors(request):
    return json.loads(VECTOR_FILES[request.param].read_text())


def test_key_wrap(vectors):
    kek, dek = bytes.fromhex(vectors["kek"]), bytes.fromhex(vectors["dek"])
    assert aes_key_unwrap_with_padding(kek, bytes.fromhex(vectors["wrapped_dek"])) == dek


def test_cases_decrypt_independently(vectors):
    kek = bytes.fromhex(vectors["kek"])
    for case in vectors["cases"]:
        env = parse_envelope(case["envelope_header"])
        suite = case["suite"]
        assert env["s"] == str(suite) and env["k"] == vectors["kek_id"]
        dek = aes_key_unwrap_with_padding(kek, base64.b64decode(env["w"]))
        digests = open_envelope(suite, dek, env)
        plen = case["plaintext_len"]
        v3 = env["v"] == "3"
        if case["layout"] == "single":
            assert int(env["l"]) == plen
            trailer = TRAILER_LEN if v3 and plen else 0
            assert case["stored_len"] == plen + O * -(-plen // F) + trailer
        elif case["layout"] == "end":
            assert plen == END_SEALED and case["stored_len"] == H + M * O  # one part overhead
        else:
            assert case["stored_len"] == plen + H + M * O
        # Rebuild the stored bytes from the documented nonce rule and compare.
        base = bytes.fromhex(vectors["frame_nonce_base"])
        gcm = aead(suite, dek)
        layout = LAYOUTS[case["layout"]]
        part = case["part"]
        frames, flen = geometry(case["layout"], plen)
        stored = b"" if layout == 0 else MAGIC[case["layout"]] + struct.pack(">IQ", part, plen)
        pt = bytes(i % 251 for i in range(plen)) if case["name"].endswith("single-two-frames") else (
            bytes(i % 7 for i in range(plen)) if layout else b"s3crypt test vector"[:plen])
        sealed_md5 = VECTOR_MULTIPART_MD5 if case["name"].endswith("-etag") else None
        if case["layout"] == "end":
            pt = end_table(END_VECTOR_LENGTHS, md5=sealed_md5)
        assert hashlib.sha256(pt).hexdigest() == case["plaintext_sha256"]
        def nonce_of(i):
            return base[:4] + struct.pack(">Q", (int.from_bytes(base[4:], "big") + i) % 2**64)
        for i in range(frames):
            nonce = nonce_of(i)
            chunk = pt[min(i * flen, plen): min((i + 1) * flen, plen)]
            stored += nonce + gcm.encrypt(nonce, chunk, frame_aad(suite, layout, part, i, frames, plen))
        trailer_digests = None
        frames_only = len(stored)
        if case["layout"] == "closing":
            nonce = nonce_of(CLOSING_FRAMES)
            table = end_table(CLOSING_VECTOR_LENGTHS, CLOSING_SEALED, sealed_md5)
            stored += nonce + gcm.encrypt(nonce, table, frame_aad(suite, 5, part, 0, 1, CLOSING_SEALED))
        if v3 and plen:
            # Sealed independently here: MD5 and CRC32 (an aws-chunked trailing checksum).
            crc = base64.b64encode(zlib.crc32(pt).to_bytes(4, "big")).decode()
            h = b"x-amz-checksum-crc32"
            block = bytes([3]) + hashlib.md5(pt).digest() + bytes([len(h)]) + h + bytes([len(crc)]) + crc.encode()
            block += bytes(SECRETS_LEN - len(block))
            nonce = nonce_of(frames)
            stored += nonce + gcm.encrypt(nonce, block, frame_aad(suite, 6, 0, frames, frames + 1, plen))
            trailer_digests = open_trailer(suite, dek, plen, stored[frames_only:])
            stored_frames = stored[:frames_only]
        assert len(stored) == case["stored_len"]
        assert hashlib.sha256(stored).hexdigest() == case["stored_sha256"]
        assert case["stored_hex"].rstrip(".") == stored.hex()[: len(case["stored_hex"].rstrip("."))]
        frames_part = stored_frames if trailer_digests else stored
        assert decrypt_stream(suite, dek, case["layout"], part, plen, frames_part) == pt
        # The other suite's AEAD does not open these frames.
        if plen or layout:  # (an empty single object has no frames)
            with pytest.raises(InvalidTag):
                decrypt_stream(3 - suite, dek, case["layout"], part, plen, frames_part)
        # A part read in the other part layout fails its first frame.
        if layout in (1, 2):
            other = "part" if case["layout"] == "final" else "final"
            with pytest.raises(InvalidTag):
                decrypt_stream(suite, dek, other, part, plen, MAGIC[other] + stored[4:])
        if case["layout"] == "single" and v3:
            # The envelope (sealed before the body) knows no digest; the trailer does.
            assert digests == {"md5": None, "checksum": None}
            if plen:
                crc = base64.b64encode(zlib.crc32(pt).to_bytes(4, "big")).decode()
                assert trailer_digests == {"md5": hashlib.md5(pt).hexdigest(), "checksum": ("x-amz-checksum-crc32", crc)}
                # The trailer is bound to the stream's length: another length fails.
                with pytest.raises(InvalidTag):
                    open_trailer(suite, dek, plen + 1, stored[frames_only:])
        elif case["layout"] == "single":
            assert digests["md5"] == hashlib.md5(pt).hexdigest()
            if env["v"] == "2":
                crc = base64.b64encode(zlib.crc32(pt).to_bytes(4, "big")).decode()
                assert digests["checksum"] == ("x-amz-checksum-crc32", crc)
                # Nothing of the plaintext's digests is in the clear header.
                assert hashlib.md5(pt).hexdigest() not in case["envelope_header"]
                assert crc not in case["envelope_header"]
        else:
            assert digests == {"md5": None, "checksum": None}


def test_both_suites_have_vectors(vectors):
    names = {(c["suite"], c["name"].split("/")[-1]) for c in vectors["cases"]}
    bases = ["single-empty", "single-short", "single-two-frames"]
    if not vectors["cases"][0]["envelope_header"].startswith("v=3;"):
        bases += ["part-2-of-3000"]
    if vectors["cases"][0]["envelope_header"].startswith("v=2;"):
        bases += ["final-3-of-1000", "end-4-after-3-parts", "closing-3-of-1000",
                  "end-4-after-3-parts-etag", "closing-3-of-1000-etag"]
    for base in bases:
        assert {(1, base), (2, base)} <= names


@pytest.mark.parametrize("name", ["single-short", "chacha20-poly1305/single-short"])
def test_tampering_is_detected(vectors, name):
    kek = bytes.fromhex(vectors["kek"])
    case = next(c for c in vectors["cases"] if c["name"] == name)
    env = parse_envelope(case["envelope_header"])
    dek = aes_key_unwrap_with_padding(kek, base64.b64decode(env["w"]))
    stored = bytearray(bytes.fromhex(case["stored_hex"]))
    stored[20] ^= 1
    if env["v"] == "3":
        frames_len = case["stored_len"] - TRAILER_LEN
        trailer = bytearray(stored[frames_len:])
        trailer[-1] ^= 1
        with pytest.raises(InvalidTag):
            open_trailer(case["suite"], dek, case["plaintext_len"], bytes(trailer))
        stored = stored[:frames_len]
    with pytest.raises(InvalidTag):
        decrypt_stream(case["suite"], dek, "single", 0, case["plaintext_len"], bytes(stored))
    # The envelope itself: a flipped bit of its sealed block or of a clear field fails.
    if env["v"] in ("2", "3"):
        e = bytearray(base64.b64decode(env["e"]))
        e[20] ^= 1
        with pytest.raises(InvalidTag):
            open_envelope(case["suite"], dek, {**env, "e": base64.b64encode(bytes(e)).decode()})
        with pytest.raises(InvalidTag):
            open_envelope(case["suite"], dek, {**env, "l": str(case["plaintext_len"] + 1)})
