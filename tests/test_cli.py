"""The `s3crypt` command-line tool (cli/, target/release/s3crypt) against the real stack:
Ceph RGW as the backend, Envoys with the filter writing the objects the tool then reads
straight from the backend (or from raw files), with keys only from its environment or stdin.

Covered:
  * decrypt of objects the filter wrote (empty, short, multi-frame, a 3-part multipart
    upload; AES-256-GCM and ChaCha20-Poly1305 deployments), to a file and to stdout;
  * decrypt of the committed format vectors (envelope versions 1, 2, 3; both suites);
  * raw-file mode: stored bytes + `aws s3api head-object` JSON, decrypt and verify;
  * fail closed: a flipped byte (middle frame, trailer, a byte of part 2), truncation (a
    single object cut short, a multipart object without its last part), an envelope pasted
    from another object, an unknown key id, a wrong key under the right id: exit 1, no
    output file and no partial file; stdout gets at most a verified strict prefix of the
    plaintext, never a wrong byte;
  * verify of a prefix: failures by kind in the summary and the JSON-lines report,
    --allow-plaintext;
  * inspect --json of single and multipart objects (and that it shows no key material);
  * rewrap (key rotation): an Envoy holding only the new key reads everything back as the
    client saw it (body, ETag, metadata, content headers, tags), a second run skips all,
    --dry-run and objects outside the prefix are untouched, a forged envelope is refused;
  * import-s3proxy verify / decrypt / reencrypt / inspect of objects written by
    tests/predecessor.py (and raw files with their manifest), plain `decrypt` with the
    predecessor key, tampered predecessor segments (neither served nor re-encrypted);
  * keys: from stdin, an active key the reader lacks, malformed keys never echoed;
  * usage errors exit 2; a key on the command line is refused and not echoed.
"""

import base64
import hashlib
import json
import os
import subprocess
import zlib

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

import predecessor
from stack import ROOT
from test_e2e_multipart import PART_OVERHEAD, MiB
from test_e2e_objects import F, pattern
from test_e2e_suites import CHACHA
from test_format_vectors import SECRETS_LEN, SUITES, VECTOR_FILES, frame_aad

CLI = ROOT / "target" / "release" / "s3crypt"
AWS = ROOT / ".venv" / "bin" / "aws"
S3PROXY_KEY = "the predecessor's key string"


@pytest.fixture(scope="module", autouse=True)
def _built():
    assert CLI.exists(), f"{CLI} is missing: cargo build --release -p s3crypt-cli"


def b64(k):
    return base64.b64encode(k).decode()


def cli_env(stack, keks=None, active=None, s3proxy=None, backend=True):
    """A clean environment: backend endpoint and credentials, the keys asked for (default:
    the stack's key) and nothing else."""
    env = {}
    if backend:
        env.update(S3CRYPT_BACKEND_ENDPOINT=stack.backend_endpoint,
                   S3CRYPT_BACKEND_ACCESS_KEY_ID=stack.backend_creds[0],
                   S3CRYPT_BACKEND_SECRET_ACCESS_KEY=stack.backend_creds[1])
    keks = {stack.key_id: stack.kek} if keks is None else keks
    if keks:
        env["S3CRYPT_KEKS"] = ",".join(f"{i}={b64(k)}" for i, k in keks.items())
    if active:
        env["S3CRYPT_ACTIVE_KEY_ID"] = active
    if s3proxy:
        env["S3PROXY_ENCRYPT_KEY"] = s3proxy
    return env


def run_cli(stack, *args, env=None, input=None, timeout=180):
    r = subprocess.run([str(CLI), *map(str, args)], env=cli_env(stack) if env is None else env, input=input,
                       capture_output=True, timeout=timeout)
    r.err = r.stderr.decode(errors="replace")
    r.out = r.stdout.decode(errors="replace")
    return r


def ok(r):
    assert r.returncode == 0, (r.returncode, r.err, r.out[:2000])
    return r


def failed(r, *needles):
    assert r.returncode == 1, (r.returncode, r.err, r.out[:2000])
    for n in needles:
        assert n in r.err + r.out, (n, r.err, r.out[:2000])
    return r


def put_mpu(s3, bucket, key, parts, **kw):
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, **kw)["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=p)["ETag"]}
            for n, p in enumerate(parts, 1)]
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done})


MPU_PARTS = [5 * MiB, 5 * MiB, 1 * MiB]


def write_set(s3, bucket, seed):
    """Empty, short, multi-frame single objects (one under a key that needs encoding) and a
    3-part multipart object: {key: data}."""
    objs = {"empty": b"", "short": b"hello, s3crypt", "frames": pattern(200_000, seed),
            "dir/a key+with&odd=chars ü": b"odd key"}
    for k, d in objs.items():
        s3.put_object(Bucket=bucket, Key=k, Body=d)
    parts = [pattern(n, seed + 1 + i) for i, n in enumerate(MPU_PARTS)]
    put_mpu(s3, bucket, "mpu", parts)
    objs["mpu"] = b"".join(parts)
    return objs


def envelope(stack, bucket, key):
    meta = stack.backend_s3().head_object(Bucket=bucket, Key=key)["Metadata"]
    return dict(f.split("=", 1) for f in meta["s3crypt"].split(";"))


def flip(offset):
    def f(b):
        b[offset if offset >= 0 else len(b) + offset] ^= 0x01
        return b
    return f


@pytest.fixture(scope="module")
def chacha(stack):
    return stack.start_envoy(plugin_extra=CHACHA)


# --- decrypt -----------------------------------------------------------------------------

@pytest.mark.parametrize("suite", ["aes", "chacha"])
def test_decrypt_objects_written_through_the_filter(stack, bucket, chacha, suite, tmp_path):
    objs = write_set(stack.s3() if suite == "aes" else chacha.s3(), bucket, seed=10)
    assert envelope(stack, bucket, "frames")["s"] == ("1" if suite == "aes" else "2")
    for i, (key, data) in enumerate(objs.items()):
        out = tmp_path / f"out-{i}"
        ok(run_cli(stack, "decrypt", f"s3://{bucket}/{key}", "-o", out))
        assert out.read_bytes() == data, key
        assert ok(run_cli(stack, "decrypt", f"s3://{bucket}/{key}")).stdout == data, key
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"out-{i}" for i in range(len(objs)))


def test_keys_from_stdin(stack, bucket):
    """--keys-file -: the keys on stdin (several lines), none in the environment."""
    stack.s3().put_object(Bucket=bucket, Key="k", Body=b"stdin keys")
    keys = f"other-key={b64(os.urandom(32))}\n{stack.key_id}={b64(stack.kek)}\n".encode()
    r = run_cli(stack, "decrypt", f"s3://{bucket}/k", "--keys-file", "-", env=cli_env(stack, keks={}), input=keys)
    assert ok(r).stdout == b"stdin keys"


def vector_stored(doc, case):
    """The stored bytes of a single-object vector case: `stored_hex` where it is whole, else
    rebuilt by the documented nonce rule (frame i: base with its last 8 bytes + i) and
    checked against the committed `stored_sha256`."""
    if not case["stored_hex"].endswith("."):
        stored = bytes.fromhex(case["stored_hex"])
    else:
        env = dict(f.split("=", 1) for f in case["envelope_header"].split(";"))
        suite, plen = int(case["suite"]), int(case["plaintext_len"])
        dek = aes_key_unwrap_with_padding(bytes.fromhex(doc["kek"]), base64.b64decode(env["w"]))
        gcm = SUITES[suite](dek)
        base = bytes.fromhex(doc["frame_nonce_base"])
        pt = bytes(i % 251 for i in range(plen))
        assert hashlib.sha256(pt).hexdigest() == case["plaintext_sha256"]
        frames = -(-plen // F)
        counter = int.from_bytes(base[4:], "big")
        nonces = [base[:4] + ((counter + i) % 2**64).to_bytes(8, "big") for i in range(frames + 1)]
        stored = b"".join(
            nonces[i] + gcm.encrypt(nonces[i], pt[i * F:(i + 1) * F], frame_aad(suite, 0, 0, i, frames, plen))
            for i in range(frames))
        if env["v"] == "3":
            crc = base64.b64encode(zlib.crc32(pt).to_bytes(4, "big")).decode().encode()
            h = b"x-amz-checksum-crc32"
            block = bytes([3]) + hashlib.md5(pt).digest() + bytes([len(h)]) + h + bytes([len(crc)]) + crc
            block += bytes(SECRETS_LEN - len(block))
            aad = frame_aad(suite, 6, 0, frames, frames + 1, plen)
            stored += nonces[frames] + gcm.encrypt(nonces[frames], block, aad)
    assert hashlib.sha256(stored).hexdigest() == case["stored_sha256"], case["name"]
    return stored


@pytest.mark.parametrize("version", sorted(VECTOR_FILES))
def test_decrypt_committed_vectors(stack, bucket, version):
    doc = json.loads(VECTOR_FILES[version].read_text())
    env = cli_env(stack, keks={doc["kek_id"]: bytes.fromhex(doc["kek"])})
    cases = [c for c in doc["cases"] if c["layout"] == "single"]
    assert {str(c["suite"]) for c in cases} == {"1", "2"} and len(cases) == 6
    for c in cases:
        stack.backend_s3().put_object(Bucket=bucket, Key=c["name"], Body=vector_stored(doc, c),
                                      Metadata={"s3crypt": c["envelope_header"]})
        r = ok(run_cli(stack, "decrypt", f"s3://{bucket}/{c['name']}", env=env))
        assert hashlib.sha256(r.stdout).hexdigest() == c["plaintext_sha256"], c["name"]
        assert len(r.stdout) == int(c["plaintext_len"])


# --- raw files ---------------------------------------------------------------------------

def raw_files(stack, bucket, key, d):
    """The stored bytes (from the backend) and what `aws s3api head-object` prints for it."""
    d.mkdir(exist_ok=True)
    stored, meta = d / f"{key}.stored", d / f"{key}.head.json"
    stored.write_bytes(stack.stored(bucket, key))
    env = {"AWS_ACCESS_KEY_ID": stack.backend_creds[0], "AWS_SECRET_ACCESS_KEY": stack.backend_creds[1],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "HOME": str(d)}
    r = subprocess.run([str(AWS), "--endpoint-url", stack.backend_endpoint, "s3api", "head-object", "--bucket", bucket,
                        "--key", key], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    meta.write_text(r.stdout)
    return stored, meta


def test_raw_file_mode_decrypt_and_verify(stack, bucket, tmp_path):
    s3 = stack.s3()
    objs = {"frames": pattern(200_000, 30)}
    s3.put_object(Bucket=bucket, Key="frames", Body=objs["frames"])
    parts = [pattern(n, 31 + i) for i, n in enumerate(MPU_PARTS)]
    put_mpu(s3, bucket, "mpu", parts)
    objs["mpu"] = b"".join(parts)
    for key, data in objs.items():
        stored, meta = raw_files(stack, bucket, key, tmp_path / "raw")
        assert "s3crypt" in json.loads(meta.read_text())["Metadata"]
        out = tmp_path / f"{key}.out"
        ok(run_cli(stack, "decrypt", "--file", stored, "--meta", meta, "-o", out, env=cli_env(stack, backend=False)))
        assert out.read_bytes() == data
        assert "verified" in ok(run_cli(stack, "verify", "--file", stored, "--meta", meta,
                                        env=cli_env(stack, backend=False))).out
        # The same file, one byte changed: refused.
        bad = bytearray(stored.read_bytes())
        bad[len(bad) // 2] ^= 1
        stored.write_bytes(bad)
        r = run_cli(stack, "verify", "--file", stored, "--meta", meta, env=cli_env(stack, backend=False))
        failed(r, "integrity")


# --- fail closed -------------------------------------------------------------------------

def assert_refused(stack, bucket, key, data, tmp_path, *needles, env=None):
    """decrypt -o FILE fails, leaving nothing in FILE's directory; to stdout, at most a
    strict prefix of the plaintext comes out."""
    outdir = tmp_path / f"out-{key.replace('/', '_')}"
    outdir.mkdir()
    failed(run_cli(stack, "decrypt", f"s3://{bucket}/{key}", "-o", outdir / "plain", env=env), *needles)
    assert list(outdir.iterdir()) == []
    r = failed(run_cli(stack, "decrypt", f"s3://{bucket}/{key}", env=env), *needles)
    assert len(r.stdout) < len(data) and data.startswith(r.stdout)
    return r.stdout


def test_flipped_byte_in_middle_frame_releases_only_the_frames_before(stack, bucket, tmp_path):
    data = pattern(200_000, 40)
    stack.s3().put_object(Bucket=bucket, Key="k", Body=data)
    stack.rewrite_stored(bucket, "k", flip(F + 28 + 1000))  # inside frame 1 of 4
    out = assert_refused(stack, bucket, "k", data, tmp_path, "integrity")
    assert len(out) <= F


def test_flipped_last_byte_holds_back_the_last_plaintext_byte(stack, bucket, tmp_path):
    data = pattern(200_000, 41)
    stack.s3().put_object(Bucket=bucket, Key="k", Body=data)
    stack.rewrite_stored(bucket, "k", flip(-1))  # the trailer's tag
    assert_refused(stack, bucket, "k", data, tmp_path, "integrity")


def stored_parts(stack, bucket, key, plain_lens):
    """The stored parts of a multipart object the filter wrote from parts of `plain_lens`."""
    stored = stack.stored(bucket, key)
    lens = [n + PART_OVERHEAD for n in plain_lens]
    assert len(stored) == sum(lens)
    cuts = [sum(lens[:i]) for i in range(len(lens) + 1)]
    return [bytearray(stored[a:b]) for a, b in zip(cuts, cuts[1:])]


def test_flipped_byte_in_second_part_of_multipart(stack, bucket, tmp_path):
    parts = [pattern(n, 42 + i) for i, n in enumerate(MPU_PARTS)]
    put_mpu(stack.s3(), bucket, "m", parts)
    sp = stored_parts(stack, bucket, "m", MPU_PARTS)
    sp[1][len(sp[1]) // 2] ^= 0x80
    stack.rewrite_stored_parts(bucket, "m", [bytes(p) for p in sp])
    out = assert_refused(stack, bucket, "m", b"".join(parts), tmp_path, "integrity")
    assert len(out) < MPU_PARTS[0] + MPU_PARTS[1] // 2 + F


@pytest.mark.parametrize("layout", ["single", "multipart"])
def test_truncated_object_fails(stack, bucket, tmp_path, layout):
    """A single object cut short; a multipart object without its last part (its ETag
    then counts the parts left, as a provider re-completing it would make it)."""
    if layout == "single":
        data = pattern(200_000, 43)
        stack.s3().put_object(Bucket=bucket, Key="k", Body=data)
        stack.rewrite_stored(bucket, "k", lambda b: b[:-100])
        assert_refused(stack, bucket, "k", data, tmp_path, "length")
    else:
        parts = [pattern(n, 46 + i) for i, n in enumerate(MPU_PARTS)]
        put_mpu(stack.s3(), bucket, "k", parts)
        sp = stored_parts(stack, bucket, "k", MPU_PARTS)
        stack.rewrite_stored_parts(bucket, "k", [bytes(p) for p in sp[:2]])
        assert_refused(stack, bucket, "k", b"".join(parts), tmp_path, "integrity")


def test_envelope_of_another_object_fails(stack, bucket, tmp_path):
    """Same size, same key: only the data key differs, and nothing of either is released."""
    data = pattern(200_000, 44)
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="victim", Body=data)
    s3.put_object(Bucket=bucket, Key="donor", Body=pattern(200_000, 45))
    donor = stack.backend_s3().head_object(Bucket=bucket, Key="donor")["Metadata"]
    stack.backend_s3().put_object(Bucket=bucket, Key="victim", Body=stack.stored(bucket, "victim"), Metadata=donor)
    assert assert_refused(stack, bucket, "victim", data, tmp_path, "integrity") == b""


@pytest.mark.parametrize("which", ["unknown-id", "wrong-bytes"])
def test_wrong_key_fails(stack, bucket, tmp_path, which):
    data = b"secret" * 1000
    stack.s3().put_object(Bucket=bucket, Key="k", Body=data)
    key_id = "another-key" if which == "unknown-id" else stack.key_id
    env = cli_env(stack, keks={key_id: os.urandom(32)})
    needle = "unknown key id" if which == "unknown-id" else "does not unwrap"
    assert assert_refused(stack, bucket, "k", data, tmp_path, needle, env=env) == b""


# --- verify ------------------------------------------------------------------------------

def test_verify_prefix_reports_failures_by_kind(stack, bucket, tmp_path):
    s3 = stack.s3()
    for k, n in [("all/good-1", 0), ("all/good-2 +&ü", 1), ("all/good-3", 200_000)]:
        s3.put_object(Bucket=bucket, Key=k, Body=pattern(n, 50))
    put_mpu(s3, bucket, "all/good-mpu", [pattern(5 * MiB, 51), b"last part"])
    s3.put_object(Bucket=bucket, Key="all/tampered", Body=pattern(100_000, 52))
    stack.rewrite_stored(bucket, "all/tampered", flip(5000))
    stack.backend_s3().put_object(Bucket=bucket, Key="all/plain", Body=b"no envelope")
    s3.put_object(Bucket=bucket, Key="other/x", Body=b"outside the prefix")
    report = tmp_path / "report.jsonl"
    r = failed(run_cli(stack, "verify", f"s3://{bucket}/all/", "--report", report, "--jobs", "3"))
    assert "verify: 6 objects" in r.out and "verified: 4" in r.out and "failed: 2" in r.out
    assert "failure, integrity (tampered or corrupt): 1" in r.out and "failure, not encrypted: 1" in r.out
    lines = {d["key"]: d for d in map(json.loads, report.read_text().splitlines())}
    assert sorted(lines) == ["all/good-1", "all/good-2 +&ü", "all/good-3", "all/good-mpu", "all/plain", "all/tampered"]
    assert lines["all/tampered"]["failure"] == "integrity (tampered or corrupt)"
    assert lines["all/plain"]["failure"] == "not encrypted"
    assert all(lines[k]["result"] == "verified" and lines[k]["failure"] is None for k in lines if "good" in k)
    assert lines["all/good-3"]["bytes"] == 200_000
    # Only good objects: exit 0.
    assert "no failures" in ok(run_cli(stack, "verify", f"s3://{bucket}/all/good")).out
    # Plaintext allowed: only the tampered object fails.
    r = failed(run_cli(stack, "verify", f"s3://{bucket}/all/", "--allow-plaintext"))
    assert "failure, integrity (tampered or corrupt): 1" in r.out and "not encrypted" not in r.out
    ok(run_cli(stack, "verify", f"s3://{bucket}/all/p", "--allow-plaintext"))
    failed(run_cli(stack, "verify", f"s3://{bucket}/all/p"))


# --- inspect -----------------------------------------------------------------------------

def test_inspect_json_shows_structure_but_no_keys(stack, bucket, chacha):
    put = chacha.s3().put_object(Bucket=bucket, Key="single", Body=pattern(200_000, 60))
    parts = [pattern(5 * MiB, 61), pattern(5 * MiB, 62), pattern(1000, 63)]
    done = put_mpu(stack.s3(), bucket, "mpu", parts)
    secrets = [b64(stack.kek), stack.kek.hex()]
    for key in ["single", "mpu"]:
        w = base64.b64decode(envelope(stack, bucket, key)["w"])
        dek = aes_key_unwrap_with_padding(stack.kek, w)
        secrets += [b64(dek), dek.hex()]
    for key in ["single", "mpu"]:
        text = ok(run_cli(stack, "inspect", f"s3://{bucket}/{key}", "--json")).out
        for s in secrets:
            assert s not in text and s.upper() not in text
        plain = ok(run_cli(stack, "inspect", f"s3://{bucket}/{key}")).out
        assert all(s not in plain for s in secrets)
        j = json.loads(text)
        assert j["key_id"] == stack.key_id and j["stored_size"] == len(stack.stored(bucket, key))
        if key == "single":
            assert (j["format"], j["envelope_version"], j["suite"]) == ("s3crypt single", 3, "chacha20-poly1305")
            assert j["plaintext_size"] == 200_000
            # (The MD5 is sealed in the trailer of a version 3 object.)
            assert j["sealed_md5"] == hashlib.md5(pattern(200_000, 60)).hexdigest() and j["client_etag"] == put["ETag"]
        else:
            assert (j["format"], j["envelope_version"], j["suite"]) == ("s3crypt multipart", 2, "aes-256-gcm")
            assert j["plaintext_size"] == sum(map(len, parts))
            table = [(p["number"], p["plaintext_size"], p["stored_size"]) for p in j["parts"]]
            assert table[:3] == [(n, len(p), len(p) + PART_OVERHEAD) for n, p in enumerate(parts, 1)]
            assert all(p["plaintext_size"] == 0 for p in j["parts"][3:])  # an end part, if any
            assert [p["stored_offset"] for p in j["parts"]][:3] == [0, 5 * MiB + PART_OVERHEAD,
                                                                     2 * (5 * MiB + PART_OVERHEAD)]
            assert j["client_etag"] in (None, done["ETag"])


# --- rewrap ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rotation(stack):
    """Keys "old" and "new"; Envoys writing under old (AES, ChaCha20), one holding only new."""
    old, new = os.urandom(32), os.urandom(32)
    return {
        "old": old, "new": new,
        "aes": stack.start_envoy(keks={"old": old}, active="old"),
        "chacha": stack.start_envoy(keks={"old": old}, active="old", plugin_extra=CHACHA),
        "reader": stack.start_envoy(keks={"new": new}, active="new"),
    }


def rotation_env(stack, rotation):
    return cli_env(stack, keks={"old": rotation["old"], "new": rotation["new"]}, active="new")


def client_view(s3, bucket, key):
    g = s3.get_object(Bucket=bucket, Key=key)
    tags = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {"body": g["Body"].read(), "etag": g["ETag"], "meta": g["Metadata"], "type": g.get("ContentType"),
            "cache": g.get("CacheControl"), "tags": sorted((t["Key"], t["Value"]) for t in tags)}


def test_rewrap_rotates_keys_and_keeps_what_clients_see(stack, bucket, rotation):
    s3, cs3 = rotation["aes"].s3(), rotation["chacha"].s3()
    s3.put_object(Bucket=bucket, Key="r/small", Body=b"small object")
    s3.put_object(Bucket=bucket, Key="r/frames", Body=pattern(3 * F + 7, 70))
    s3.put_object(Bucket=bucket, Key="r/empty", Body=b"")
    put_mpu(s3, bucket, "r/mpu", [pattern(5 * MiB, 71), pattern(1024, 72)])
    s3.put_object(Bucket=bucket, Key="r/meta", Body=b"with metadata", Metadata={"owner": "alice", "x": "1"},
                  ContentType="text/x-test", CacheControl="max-age=60", Tagging="project=s3crypt&tier=gold")
    cs3.put_object(Bucket=bucket, Key="r/chacha", Body=pattern(F + 1, 73))
    # Two client parts of 5 MiB: the filter closes the object with an end part (3 stored);
    # with metadata and tags (set after: RGW drops those of CreateMultipartUpload).
    put_mpu(s3, bucket, "r/mpu-end", [pattern(5 * MiB, 75), pattern(5 * MiB, 76)], Metadata={"part": "ed"},
            ContentType="application/x-parts")
    s3.put_object_tagging(Bucket=bucket, Key="r/mpu-end", Tagging={"TagSet": [{"Key": "big", "Value": "yes"}]})
    s3.put_object(Bucket=bucket, Key="outside", Body=b"not under the prefix")
    keys = ["r/small", "r/frames", "r/empty", "r/mpu", "r/meta", "r/chacha", "r/mpu-end"]
    before = {k: client_view(s3, bucket, k) for k in keys}
    assert before["r/meta"]["tags"] == [("project", "s3crypt"), ("tier", "gold")]
    assert before["r/mpu-end"]["tags"] == [("big", "yes")] and before["r/mpu-end"]["meta"] == {"part": "ed"}
    # Version 1 and 2 envelopes (the committed vectors, under their own key) too.
    vectors = {}
    for v in (1, 2):
        doc = json.loads(VECTOR_FILES[v].read_text())
        c = next(c for c in doc["cases"] if c["name"] == "chacha20-poly1305/single-two-frames")
        stack.backend_s3().put_object(Bucket=bucket, Key=f"r/v{v}", Body=vector_stored(doc, c),
                                      Metadata={"s3crypt": c["envelope_header"]})
        vectors[f"r/v{v}"] = (doc, c)
    keks = {"old": rotation["old"], "new": rotation["new"], doc["kek_id"]: bytes.fromhex(doc["kek"])}
    env = cli_env(stack, keks=keks, active="new")
    r = ok(run_cli(stack, "rewrap", f"s3://{bucket}/r/", env=env))
    assert "rewrapped: 9" in r.out and "no failures" in r.out
    reader = rotation["reader"].s3()
    for k in keys:
        assert envelope(stack, bucket, k)["k"] == "new", k
        assert client_view(reader, bucket, k) == before[k], k
    for k, (doc, c) in vectors.items():
        e = envelope(stack, bucket, k)
        assert (e["k"], e["v"], e["s"]) == ("new", c["envelope_header"][2], "2")
        g = reader.get_object(Bucket=bucket, Key=k)
        body = g["Body"].read()
        assert hashlib.sha256(body).hexdigest() == c["plaintext_sha256"]
        assert g["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert envelope(stack, bucket, "r/chacha")["s"] == "2"
    assert stack.backend_s3().head_object(Bucket=bucket, Key="r/mpu-end")["ETag"].endswith('-3"')
    assert envelope(stack, bucket, "outside")["k"] == "old"
    # Every object is now under the active key: a second run changes nothing.
    r = ok(run_cli(stack, "rewrap", f"s3://{bucket}/r/", env=env))
    assert "skipped: 9" in r.out and "rewrapped" not in r.out
    # The tool reads them with the new key alone.
    ok(run_cli(stack, "verify", f"s3://{bucket}/r/", env=cli_env(stack, keks={"new": rotation["new"]})))


def test_rewrap_dry_run_changes_nothing(stack, bucket, rotation):
    s3 = rotation["aes"].s3()
    s3.put_object(Bucket=bucket, Key="a", Body=b"one")
    put_mpu(s3, bucket, "b", [pattern(5 * MiB, 74), b"two"])
    heads = {k: stack.backend_s3().head_object(Bucket=bucket, Key=k) for k in "ab"}
    r = ok(run_cli(stack, "rewrap", f"s3://{bucket}/", "--dry-run", env=rotation_env(stack, rotation)))
    assert "would rewrap: 2" in r.out
    for k, h in heads.items():
        now = stack.backend_s3().head_object(Bucket=bucket, Key=k)
        assert (now["Metadata"], now["ETag"], now["LastModified"]) == (h["Metadata"], h["ETag"], h["LastModified"])


def test_rewrap_refuses_a_tampered_envelope(stack, bucket, rotation):
    """An envelope whose tag does not verify is not rewrapped (which would launder it)."""
    rotation["aes"].s3().put_object(Bucket=bucket, Key="k", Body=b"data")
    meta = stack.backend_s3().head_object(Bucket=bucket, Key="k")["Metadata"]
    env = dict(f.split("=", 1) for f in meta["s3crypt"].split(";"))
    env["l"] = "5"
    forged = ";".join(f"{k}={v}" for k, v in env.items())
    stack.backend_s3().copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k"},
                                   Metadata={"s3crypt": forged}, MetadataDirective="REPLACE")
    failed(run_cli(stack, "rewrap", f"s3://{bucket}/", env=rotation_env(stack, rotation)))
    assert envelope(stack, bucket, "k")["k"] == "old"


# --- the predecessor ---------------------------------------------------------------------

def put_predecessor_set(stack, bucket):
    """The predecessor's three layouts, straight to the backend: {key: data}."""
    b = stack.backend_s3()
    objs = {"single": pattern(100_000, 80), "stream": pattern(11 * MiB, 81)}
    predecessor.put_single(b, bucket, "single", objs["single"], S3PROXY_KEY, extra_metadata={"owner": "bob"},
                           content_type="text/x-old")
    predecessor.put_streaming(b, bucket, "stream", objs["stream"], S3PROXY_KEY, part_size=5 * MiB)
    parts = [pattern(5 * MiB, 82), pattern(1024, 83)]
    # (A split of the 5 MiB client part would make a backend part under 5 MiB: none.)
    predecessor.put_client_multipart(b, bucket, "client", parts, S3PROXY_KEY)
    objs["client"] = b"".join(parts)
    for k, d in objs.items():
        assert predecessor.read(b, bucket, k, S3PROXY_KEY) == d
    return objs


@pytest.fixture(scope="module")
def predecessor_bucket(stack):
    name = "cli-predecessor-objects"
    stack.s3().create_bucket(Bucket=name)
    return name, put_predecessor_set(stack, name)


def test_import_verify_and_decrypt_predecessor_objects(stack, predecessor_bucket, tmp_path):
    bucket, objs = predecessor_bucket
    env = cli_env(stack, keks={}, s3proxy=S3PROXY_KEY)
    r = ok(run_cli(stack, "import-s3proxy", "verify", f"s3://{bucket}/", env=env))
    assert "verified: 3" in r.out and "no failures" in r.out
    for k, d in objs.items():
        out = tmp_path / k
        ok(run_cli(stack, "import-s3proxy", "decrypt", f"s3://{bucket}/{k}", "-o", out, env=env))
        assert out.read_bytes() == d, k
        assert ok(run_cli(stack, "decrypt", f"s3://{bucket}/{k}", env=env)).stdout == d, k
    # inspect: the layout, its parts and segments.
    env_j = ok(run_cli(stack, "inspect", f"s3://{bucket}/client", "--json", env=env)).out
    j = json.loads(env_j)
    assert j["format"] == "s3proxy-python multipart" and j["plaintext_size"] == len(objs["client"])
    assert [(p["number"], p["plaintext_size"]) for p in j["parts"]] == [(1, 5 * MiB), (2, 1024)]
    assert json.loads(ok(run_cli(stack, "inspect", f"s3://{bucket}/stream", "--json", env=env)).out)["segments"] == 3
    assert S3PROXY_KEY not in env_j and predecessor.kek(S3PROXY_KEY).hex() not in env_j
    # Raw files: stored bytes, the HEAD as boto3 gives it, the manifest.
    b = stack.backend_s3()
    head = b.head_object(Bucket=bucket, Key="stream")
    (tmp_path / "stream.json").write_text(json.dumps({k: head[k] for k in ("ContentLength", "ETag", "Metadata")}))
    (tmp_path / "stream.stored").write_bytes(stack.stored(bucket, "stream"))
    (tmp_path / "stream.meta").write_bytes(stack.stored(bucket, predecessor.manifest_key("stream")))
    r = ok(run_cli(stack, "decrypt", "--file", tmp_path / "stream.stored", "--meta", tmp_path / "stream.json",
                   "--manifest", tmp_path / "stream.meta",
                   env=cli_env(stack, keks={}, s3proxy=S3PROXY_KEY, backend=False)))
    assert r.stdout == objs["stream"]
    # The key from stdin instead.
    r = run_cli(stack, "decrypt", f"s3://{bucket}/single", "--s3proxy-key-file", "-",
                env=cli_env(stack, keks={}), input=S3PROXY_KEY.encode() + b"\n")
    assert ok(r).stdout == objs["single"]
    # The wrong key string: nothing.
    r = failed(run_cli(stack, "decrypt", f"s3://{bucket}/single", env=cli_env(stack, keks={}, s3proxy="wrong")),
               "does not unwrap")
    assert r.stdout == b""


def test_predecessor_key_field_of_another_name(stack, bucket):
    """--s3proxy-meta NAME: the predecessor configured to keep the wrapped key elsewhere."""
    predecessor.put_single(stack.backend_s3(), bucket, "k", b"renamed field", S3PROXY_KEY, meta_name="wrapped")
    env = cli_env(stack, keks={}, s3proxy=S3PROXY_KEY)
    failed(run_cli(stack, "decrypt", f"s3://{bucket}/k", env=env), "not encrypted")
    r = ok(run_cli(stack, "decrypt", f"s3://{bucket}/k", "--s3proxy-meta", "wrapped", env=env))
    assert r.stdout == b"renamed field"


@pytest.mark.parametrize("layout", ["single", "stream"])
def test_tampered_predecessor_segment_fails(stack, bucket, tmp_path, layout):
    b = stack.backend_s3()
    env = cli_env(stack, keks={}, s3proxy=S3PROXY_KEY)
    if layout == "single":
        data = pattern(100_000, 84)
        predecessor.put_single(b, bucket, "k", data, S3PROXY_KEY)
        stack.rewrite_stored(bucket, "k", flip(50_000))
    else:
        data = pattern(11 * MiB, 85)
        predecessor.put_streaming(b, bucket, "k", data, S3PROXY_KEY, part_size=5 * MiB)
        seg = 5 * MiB + predecessor.OVERHEAD
        stored = bytearray(stack.stored(bucket, "k"))
        stored[seg + 1000] ^= 1  # in the second segment
        stack.rewrite_stored_parts(bucket, "k", [bytes(stored[i:i + seg]) for i in range(0, len(stored), seg)])
    failed(run_cli(stack, "import-s3proxy", "verify", f"s3://{bucket}/", env=env), "integrity")
    out = assert_refused(stack, bucket, "k", data, tmp_path, "integrity", env=env)
    assert len(out) < (5 * MiB if layout == "stream" else 1)
    # Nor is it re-encrypted (which would make the provider's bytes look genuine).
    head = b.head_object(Bucket=bucket, Key="k")
    env = cli_env(stack, active=stack.key_id, s3proxy=S3PROXY_KEY)
    failed(run_cli(stack, "import-s3proxy", "reencrypt", f"s3://{bucket}/", env=env))
    now = b.head_object(Bucket=bucket, Key="k")
    assert (now["ETag"], now["Metadata"]) == (head["ETag"], head["Metadata"]) and "s3crypt" not in now["Metadata"]


def test_import_reencrypt_moves_predecessor_objects_to_s3crypt(stack, bucket):
    objs = put_predecessor_set(stack, bucket)
    b = stack.backend_s3()
    assert b.list_objects_v2(Bucket=bucket, Prefix=predecessor.INTERNAL_PREFIX)["KeyCount"] == 2
    b.put_object(Bucket=bucket, Key="plain", Body=b"never encrypted")
    env = cli_env(stack, active=stack.key_id, s3proxy=S3PROXY_KEY)
    etags = {k: b.head_object(Bucket=bucket, Key=k)["ETag"] for k in objs}
    r = ok(run_cli(stack, "import-s3proxy", "reencrypt", f"s3://{bucket}/", "--dry-run", env=env))
    assert "would reencrypt: 3" in r.out and "plaintext: 1" in r.out
    assert {k: b.head_object(Bucket=bucket, Key=k)["ETag"] for k in objs} == etags
    r = ok(run_cli(stack, "import-s3proxy", "reencrypt", f"s3://{bucket}/", env=env))
    assert "reencrypted: 3" in r.out and "plaintext: 1" in r.out and "no failures" in r.out
    assert b.list_objects_v2(Bucket=bucket, Prefix=predecessor.INTERNAL_PREFIX)["KeyCount"] == 0
    s3 = stack.s3()
    for k, d in objs.items():
        head = b.head_object(Bucket=bucket, Key=k)
        assert envelope(stack, bucket, k)["k"] == stack.key_id
        assert not {"isec", "client-etag", "plaintext-size"} & set(head["Metadata"]), k
        g = s3.get_object(Bucket=bucket, Key=k)
        assert g["Body"].read() == d, k
        assert g["ETag"] == f'"{hashlib.md5(d).hexdigest()}"'
    g = s3.head_object(Bucket=bucket, Key="single")
    assert g["Metadata"] == {"owner": "bob"} and g["ContentType"] == "text/x-old"
    # The tool reads them with the s3crypt key alone; a second run has nothing to do; with
    # only the predecessor's key, they are skipped (not failed) as no longer its objects.
    b.delete_object(Bucket=bucket, Key="plain")
    ok(run_cli(stack, "verify", f"s3://{bucket}/"))
    r = ok(run_cli(stack, "import-s3proxy", "reencrypt", f"s3://{bucket}/", env=env))
    assert "skipped: 3" in r.out
    only_predecessor_key = cli_env(stack, keks={}, s3proxy=S3PROXY_KEY)
    r = ok(run_cli(stack, "import-s3proxy", "verify", f"s3://{bucket}/", env=only_predecessor_key))
    assert "skipped: 3" in r.out


# --- usage -------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    [], ["frobnicate"], ["decrypt"], ["decrypt", "bucket/key"], ["decrypt", "s3://"], ["decrypt", "s3://b"],
    ["decrypt", "s3://b/k", "-o"], ["decrypt", "--file", "stored"], ["verify", "s3://b/", "--jobs", "0"],
    ["rewrap", "s3://b/"], ["import-s3proxy", "frobnicate", "s3://b/"], ["import-s3proxy", "verify", "s3://b/"],
    ["decrypt", "s3://b/k", "s3://b/k2"],
], ids=lambda a: " ".join(a) or "nothing")
def test_usage_errors_exit_2(stack, args):
    r = run_cli(stack, *args)
    assert r.returncode == 2, (r.returncode, r.err)
    assert "usage" in (r.err + r.out).lower()


def test_read_commands_need_no_active_key(stack, bucket):
    """The filter's environment names an active key the reader may not hold: decrypt does
    not care; rewrap, which writes under it, refuses to start."""
    stack.s3().put_object(Bucket=bucket, Key="k", Body=b"data")
    env = cli_env(stack, active="not-configured")
    assert ok(run_cli(stack, "decrypt", f"s3://{bucket}/k", env=env)).stdout == b"data"
    r = run_cli(stack, "rewrap", f"s3://{bucket}/", env=env)
    assert r.returncode == 2 and "not among the keys" in r.err


def test_no_keys_is_a_usage_error(stack):
    r = run_cli(stack, "decrypt", "s3://b/k", env=cli_env(stack, keks={}))
    assert r.returncode == 2 and "no keys" in r.err


@pytest.mark.parametrize("value", ["{k}", "{k}=", "id={k}x", "ok=AAAA,{k}"])
def test_malformed_keys_are_not_echoed(stack, value):
    """A mistyped S3CRYPT_KEKS (a key without its id, say) is a usage error that names
    the entry, never what it holds."""
    key = b64(os.urandom(32))
    env = cli_env(stack, keks={})
    env["S3CRYPT_KEKS"] = value.format(k=key)
    r = run_cli(stack, "decrypt", "s3://b/k", env=env)
    assert r.returncode == 2 and "entry" in r.err, r.err
    assert key.rstrip("=")[:12] not in r.err + r.out


@pytest.mark.parametrize("form", ["--key", "--keks", "--kek=", "positional"])
def test_key_on_the_command_line_is_refused(stack, bucket, form):
    """However a key is passed in argv it is refused, and not echoed back; even with the
    right key in the environment the command does not run."""
    stack.s3().put_object(Bucket=bucket, Key="k", Body=b"data")
    secret = b64(stack.kek)
    arg = {"--key": ["--key", secret], "--keks": ["--keks", f"{stack.key_id}={secret}"],
           "--kek=": [f"--kek={secret}"], "positional": [f"{stack.key_id}={secret}"]}[form]
    r = run_cli(stack, "decrypt", f"s3://{bucket}/k", *arg)
    assert r.returncode == 2 and r.stdout == b"", (r.returncode, r.err)
    assert secret not in r.err
