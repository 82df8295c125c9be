"""make bench's own parts against real Envoy and the real filter: s3load (every payload
mode, GETs verified byte for byte, ranges, multipart) through Envoy + s3crypt into s3sink,
so that the benchmark cannot silently measure failing requests or a sink that loses data."""

import json
import os
import subprocess

import pytest

from stack import ROOT, S3SINK, Stack

S3LOAD = ROOT / "target" / "release" / "s3load"


@pytest.fixture(scope="module")
def sink_stack(tmp_path_factory):
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "benchtool"], cwd=ROOT, check=True)
    assert S3SINK.exists() and S3LOAD.exists()
    st = Stack.start(tmp_path_factory.mktemp("sink"), backend="sink")
    st.backend_s3().create_bucket(Bucket="bench")
    yield st
    st.stop()


def load(endpoint, creds, *args):
    env = dict(os.environ, S3LOAD_ACCESS_KEY_ID=creds[0], S3LOAD_SECRET_ACCESS_KEY=creds[1])
    out = subprocess.run([str(S3LOAD), "--endpoint", endpoint.replace("http://", ""), "--bucket", "bench", *args],
                         env=env, capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout, out.stderr


@pytest.mark.parametrize("auth", ["unsigned", "signed", "chunked-crc"])
def test_s3load_through_s3crypt_into_the_sink(sink_stack, auth):
    st = sink_stack
    ep, creds = st.main.endpoint, st.client_creds
    size = str(3 * 1024 * 1024 + 17)
    for args in (["--op", "put", "--auth", auth, "--size", size, "--streams", "2"],
                 ["--op", "get", "--size", size, "--streams", "2"],
                 ["--op", "range", "--size", size, "--range", "100000", "--count", "5"],
                 ["--op", "multipart", "--auth", auth, "--size", str(11 << 20), "--part", str(5 << 20), "--prefix", f"mp-{auth}"],
                 ["--op", "get", "--size", str(11 << 20), "--prefix", f"mp-{auth}"]):
        rc, out, err = load(ep, creds, "--prefix", f"obj-{auth}", *args) if "--prefix" not in args else load(ep, creds, *args)
        assert rc == 0, (args, err)
        r = json.loads(out)
        assert r["bytes"] > 0 and r["requests"] >= 1
    # What the sink holds is ciphertext, not what the client sent.
    stored = st.stored("bench", f"obj-{auth}-0")
    assert len(stored) > int(size)
    got = st.main.s3().get_object(Bucket="bench", Key=f"obj-{auth}-0")["Body"].read()
    assert len(got) == int(size) and got != stored[: len(got)]


def test_s3load_fails_when_a_get_does_not_match(sink_stack):
    """A GET of other content than s3load would have written fails the run (exit 1)."""
    st = sink_stack
    st.main.s3().put_object(Bucket="bench", Key="other-0", Body=b"x" * 4096)
    rc, _, err = load(st.main.endpoint, st.client_creds, "--op", "get", "--size", "4096", "--prefix", "other")
    assert rc == 1 and "differs" in err
    rc, _, err = load(st.main.endpoint, st.client_creds, "--op", "get", "--size", "4096", "--prefix", "missing")
    assert rc == 1 and "404" in err


def test_sink_is_refused_by_s3crypt_for_tampering(sink_stack):
    """The sink is a faithful store: a flipped stored byte makes the filter refuse the read."""
    st = sink_stack
    rc, _, err = load(st.main.endpoint, st.client_creds, "--op", "put", "--size", "70000", "--prefix", "tamper")
    assert rc == 0, err
    data = bytearray(st.stored("bench", "tamper-0"))
    data[100] ^= 1
    st.backend_s3().put_object(Bucket="bench", Key="tamper-0", Body=bytes(data),
                               Metadata=st.backend_s3().head_object(Bucket="bench", Key="tamper-0")["Metadata"])
    rc, _, err = load(st.main.endpoint, st.client_creds, "--op", "get", "--size", "70000", "--prefix", "tamper")
    assert rc == 1


def test_multipart_overwrites_read_at_once(sink_stack):
    """The same key completed again and again (short last part: the filter writes the
    closing part, checked by the sink's MD5 part ETags) reads back at once every time:
    no stale "latest version" hint sends a read to the backend unprobed."""
    st = sink_stack
    for auth in ("unsigned", "signed", "unsigned"):
        rc, _, err = load(st.main.endpoint, st.client_creds, "--op", "multipart", "--auth", auth,
                          "--size", str(11 << 20), "--part", str(5 << 20), "--prefix", "again")
        assert rc == 0, err
        rc, _, err = load(st.main.endpoint, st.client_creds, "--op", "get", "--size", str(11 << 20), "--prefix", "again")
        assert rc == 0, err
