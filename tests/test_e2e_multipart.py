"""Multipart uploads through Envoy + s3crypt (shared-data upload state): parts out of order
and in parallel, exact sizes, sequential reads, tamper detection, state clean-up, real
clients (boto3 transfer manager, aws CLI, rclone)."""

import base64
import hashlib
import os
import subprocess
import threading
import time

import botocore.exceptions
import requests
import pytest

from test_e2e_clients import run, venv_bin
from test_e2e_objects import pattern

MiB = 1 << 20
PART_OVERHEAD = 16 + 1024 * 28


def upload_parts(s3, bucket, key, parts, order=None, threads=True, metadata=None):
    """Uploads {number: bytes} as a multipart upload; returns the completed response."""
    mpu = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata or {})
    uid = mpu["UploadId"]
    etags = {}
    errors = []

    def one(n):
        try:
            r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=parts[n])
            etags[n] = r["ETag"]
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    order = order or sorted(parts)
    if threads:
        ts = [threading.Thread(target=one, args=(n,)) for n in order]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    else:
        for n in order:
            one(n)
    assert not errors, errors
    return uid, s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(parts)]},
    )


def test_parts_out_of_order_in_parallel(stack, bucket):
    s3 = stack.s3()
    parts = {1: pattern(5 * MiB + 1, 1), 2: pattern(5 * MiB + 1, 2), 3: pattern(1000, 3)}
    data = b"".join(parts[n] for n in sorted(parts))
    uid, done = upload_parts(s3, bucket, "mp", parts, order=[3, 1, 2], metadata={"k": "v"})
    assert s3.head_object(Bucket=bucket, Key="mp")["ETag"].endswith('-3"')
    g = s3.get_object(Bucket=bucket, Key="mp")
    assert g["ContentLength"] == len(data) and g["Metadata"] == {"k": "v"}
    assert g["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key="mp")["ContentLength"] == len(data)
    # Listings give a multipart object's plaintext size from its stored size and the part
    # count in its "-N" ETag.
    assert {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} == {"mp": len(data)}
    stored = stack.stored(bucket, "mp")
    assert len(stored) == len(data) + 3 * PART_OVERHEAD
    assert parts[1][:1000] not in stored
    # The upload's state is gone once completed.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=4, Body=b"late")
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"


def test_list_parts_sizes_reupload_and_abort(stack, bucket):
    s3 = stack.s3()
    uid = s3.create_multipart_upload(Bucket=bucket, Key="lp")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="lp", UploadId=uid, PartNumber=2, Body=pattern(5 * MiB, 5))
    first = s3.upload_part(Bucket=bucket, Key="lp", UploadId=uid, PartNumber=1, Body=pattern(5 * MiB + 7, 6))
    # Re-uploading a part number: new random nonces, so the stored bytes differ, but the
    # ETag is the plaintext's MD5, as S3 gives it (test_e2e_etags_parts.py).
    again = s3.upload_part(Bucket=bucket, Key="lp", UploadId=uid, PartNumber=1, Body=pattern(5 * MiB + 7, 6))
    assert first["ETag"] == again["ETag"] == '"%s"' % hashlib.md5(pattern(5 * MiB + 7, 6)).hexdigest()
    sizes = {p["PartNumber"]: p["Size"] for p in s3.list_parts(Bucket=bucket, Key="lp", UploadId=uid)["Parts"]}
    assert sizes == {1: 5 * MiB + 7, 2: 5 * MiB}
    # A part with a wrong Content-MD5 is refused and not stored.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="lp", UploadId=uid, PartNumber=3, Body=b"x" * 1000,
                       ContentMD5=base64.b64encode(hashlib.md5(b"y").digest()).decode())
    assert e.value.response["Error"]["Code"] == "BadDigest"
    assert 3 not in {p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="lp", UploadId=uid)["Parts"]}
    s3.abort_multipart_upload(Bucket=bucket, Key="lp", UploadId=uid)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="lp", UploadId=uid, PartNumber=3, Body=b"after abort")
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"


def test_swapped_or_foreign_parts_are_detected(stack, bucket):
    s3 = stack.s3()
    a = {1: pattern(5 * MiB, 7), 2: pattern(5 * MiB, 8)}
    upload_parts(s3, bucket, "a", a)
    upload_parts(s3, bucket, "b", {1: pattern(5 * MiB, 9), 2: pattern(5 * MiB, 10)})
    stored = stack.stored(bucket, "a")
    n = 5 * MiB + PART_OVERHEAD
    # Parts 1 and 2 swapped.
    stack.rewrite_stored_parts(bucket, "a", [stored[n:], stored[:n]])
    with pytest.raises(Exception):
        s3.get_object(Bucket=bucket, Key="a")["Body"].read()
    # Part 2 replaced by part 2 of another upload (another data key).
    other = stack.stored(bucket, "b")
    stack.rewrite_stored_parts(bucket, "a", [stored[:n], other[n:]])
    got = b""
    with pytest.raises(Exception):
        body = s3.get_object(Bucket=bucket, Key="a")["Body"]
        while chunk := body.read(MiB):
            got += chunk
    assert a[1].startswith(got) or got == a[1][: len(got)]
    assert a[2][:100] not in got and pattern(5 * MiB, 10)[:100] not in got
    assert stack.counter("s3crypt_integrity_failures") >= 2


def test_boto3_transfer_manager_odd_part_size(stack, bucket, tmp_path):
    from boto3.s3.transfer import TransferConfig

    s3 = stack.s3()
    data = pattern(17 * MiB + 3, 11)
    f = tmp_path / "tm.bin"
    f.write_bytes(data)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB + 1, max_concurrency=4)
    s3.upload_file(str(f), bucket, "tm", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="tm")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-4"')
    assert s3.get_object(Bucket=bucket, Key="tm")["Body"].read() == data


def aws_cli_8mb_parts(stack, tmp_path):
    """The aws CLI command and environment, with 8 MB multipart threshold and parts."""
    env = stack.client_env()
    cfg = tmp_path / "aws.cfg"
    cfg.write_text("[default]\ns3 =\n  multipart_threshold = 8MB\n  multipart_chunksize = 8MB\n  max_concurrent_requests = 4\n")
    env["AWS_CONFIG_FILE"] = str(cfg)
    return [venv_bin("aws"), "--endpoint-url", stack.endpoint], env


def test_aws_cli_multipart_upload_100mib(stack, bucket, tmp_path):
    aws, env = aws_cli_8mb_parts(stack, tmp_path)
    src = tmp_path / "cli.bin"
    data = pattern(100 * MiB, 12)
    src.write_bytes(data)
    run(aws + ["s3", "cp", str(src), f"s3://{bucket}/cli.bin"], env)
    s3 = stack.s3()
    head = s3.head_object(Bucket=bucket, Key="cli.bin")
    assert head["ETag"].endswith('-13"') and head["ContentLength"] == len(data)
    # The CLI downloads large objects with parallel ranged GETs (8 MB each): ranges that
    # cross the 8 MiB parts of the stored object.
    back = tmp_path / "back.bin"
    run(aws + ["s3", "cp", f"s3://{bucket}/cli.bin", str(back)], env)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_rclone_multipart(stack, bucket, tmp_path):
    env = stack.client_env()
    env.update({
        "RCLONE_CONFIG_S3C_TYPE": "s3", "RCLONE_CONFIG_S3C_PROVIDER": "Other",
        "RCLONE_CONFIG_S3C_ENDPOINT": stack.endpoint, "RCLONE_CONFIG_S3C_REGION": "us-east-1",
        "RCLONE_CONFIG_S3C_ACCESS_KEY_ID": stack.client_creds[0], "RCLONE_CONFIG_S3C_SECRET_ACCESS_KEY": stack.client_creds[1],
        "RCLONE_CONFIG_S3C_FORCE_PATH_STYLE": "true",
        "RCLONE_CONFIG_S3C_UPLOAD_CUTOFF": "5M", "RCLONE_CONFIG_S3C_CHUNK_SIZE": "5M",
    })
    src = tmp_path / "src"
    src.mkdir()
    data = pattern(12 * MiB + 5, 13)
    (src / "big.bin").write_bytes(data)
    run(["rclone", "copy", str(src), f"s3c:{bucket}"], env)
    g = stack.s3().get_object(Bucket=bucket, Key="big.bin")
    assert g["ETag"].endswith('-3"') and g["Metadata"].get("md5chksum")
    assert g["Body"].read() == data
    assert data[:4096] not in stack.backend_s3().get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    # Checked by MD5 and size (rclone exits non-zero on a difference); a second copy
    # uploads nothing.
    run(["rclone", "check", str(src), f"s3c:{bucket}"], env)
    before = stack.backend_s3().head_object(Bucket=bucket, Key="big.bin")
    run(["rclone", "copy", str(src), f"s3c:{bucket}"], env)
    after = stack.backend_s3().head_object(Bucket=bucket, Key="big.bin")
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])


def test_list_multipart_uploads_on_rgw(stack, bucket):
    """ListMultipartUploads through the filter lists the uploads in progress (keys and
    upload ids as the backend has them), and an aborted upload is gone."""
    s3 = stack.s3()
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"x" * 100)
    ups = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in ups] == [("k", uid)]
    assert [p["Size"] for p in s3.list_parts(Bucket=bucket, Key="k", UploadId=uid)["Parts"]] == [100]
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=uid)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def backend_requests(envoy):
    """Requests Envoy sent to the S3 cluster so far (client requests and call-outs)."""
    text = requests.get(envoy.admin_url + "/stats?filter=^cluster.s3_backend.upstream_rq_total$", timeout=5).text
    return int(text.split(":")[1])


def test_evicted_staged_part_completes_without_a_table_and_reads_walk(stack, bucket):
    """Shared data holds at most `staging_slots` (8) staged short parts: the ninth evicts
    the oldest. That upload still completes (its last part stays the client's final
    part) and reads of it are verified by walking its parts."""
    s3 = stack.s3()
    uids = [s3.create_multipart_upload(Bucket=bucket, Key=f"ev{i}")["UploadId"] for i in range(9)]
    tails = [pattern(2000 + i, 40 + i) for i in range(9)]
    etags = [s3.upload_part(Bucket=bucket, Key=f"ev{i}", UploadId=u, PartNumber=2, Body=tails[i])["ETag"]
             for i, u in enumerate(uids)]
    head = pattern(5 * MiB + 1, 39)
    for i in (0, 8):
        e1 = s3.upload_part(Bucket=bucket, Key=f"ev{i}", UploadId=uids[i], PartNumber=1, Body=head)["ETag"]
        s3.complete_multipart_upload(Bucket=bucket, Key=f"ev{i}", UploadId=uids[i], MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": etags[i]}]})
    for i in range(1, 8):
        s3.abort_multipart_upload(Bucket=bucket, Key=f"ev{i}", UploadId=uids[i])
    at = len(head) + PART_OVERHEAD
    evicted = stack.stored(bucket, "ev0")
    assert evicted[at:at + 4] == b"s3cF"  # the client's final part, no table
    assert stack.stored(bucket, "ev8")[at:at + 4] == b"s3cC"
    for i, walk in ((0, 2 + 1), (8, 0)):
        before = backend_requests(stack.main)
        r = s3.get_object(Bucket=bucket, Key=f"ev{i}", Range="bytes=-100")
        assert r["Body"].read() == (head + tails[i])[-100:]
        # HEAD, the look for a sealed table, the walk if there is none, the data.
        assert backend_requests(stack.main) - before == 1 + 1 + walk + 1, i
        assert s3.get_object(Bucket=bucket, Key=f"ev{i}")["Body"].read() == head + tails[i]


class DelayingProxy:
    """A real HTTP/1.1 reverse proxy in front of the S3 server that holds every GET whose
    Range starts at `hold_from` (where a part table is read) for `delay` seconds and
    counts them: a slow backend, as the one where concurrent first readers each walked."""

    def __init__(self, upstream_port, hold_from, delay):
        import http.client
        import http.server

        proxy = self
        self.table_reads = 0
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else None
                if self.command == "GET" and (self.headers.get("range") or "").startswith(f"bytes={hold_from}-"):
                    with proxy._lock:
                        proxy.table_reads += 1
                    time.sleep(delay)
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status)
                head = self.command == "HEAD"
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        from stack import free_port

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_concurrent_first_readers_share_one_table_lookup(stack, bucket):
    """Six range reads of one object version arrive at once on one Envoy worker, none of
    it cached, with a backend that is slow to answer the table read: one reads the
    sealed part table, the others wait for it and are planned from it. (Each Envoy
    worker is its own VM: with W workers, at most W lookups.)"""
    s3 = stack.s3()
    parts = {1: pattern(5 * MiB + 1, 60), 2: pattern(5 * MiB + 2, 61), 3: pattern(3000, 62)}
    upload_parts(s3, bucket, "shared", parts)
    data = b"".join(parts[n] for n in sorted(parts))
    stored = len(data) + 3 * PART_OVERHEAD
    proxy = DelayingProxy(stack.s3_port, stored - PART_OVERHEAD, delay=1.5)
    envoy = stack.start_envoy(s3_port=proxy.port, concurrency=1)
    try:
        c = envoy.s3()
        got, errors = {}, []

        def read(i):
            try:
                r = c.get_object(Bucket=bucket, Key="shared", Range=f"bytes={i * 999_999}-{i * 999_999 + 99}")
                got[i] = r["Body"].read()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=read, args=(i,)) for i in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors
        assert got == {i: data[i * 999_999:i * 999_999 + 100] for i in range(6)}
        assert proxy.table_reads == 1
    finally:
        envoy.stop()
        proxy.stop()


def test_part_number_and_range_reads(stack, bucket):
    s3 = stack.s3()
    # (s3s-fs refuses part-number gaps at completion; gaps are covered by parts::tests.)
    parts = {1: pattern(5 * MiB + 1, 21), 2: pattern(5 * MiB + 3, 22), 3: pattern(1000, 23)}
    data = b"".join(parts[n] for n in sorted(parts))
    upload_parts(s3, bucket, "pr", parts)
    p1 = len(parts[1])
    # Complete rewrote the short last part as a closing part, same stored size.
    stored = stack.stored(bucket, "pr")
    at = p1 + len(parts[2]) + 2 * PART_OVERHEAD
    assert len(stored) == len(data) + 3 * PART_OVERHEAD
    assert stored[at:at + 8] == b"s3cC" + (3).to_bytes(4, "big")
    # The first ranged read finds the part table: a HEAD and one read of the object's
    # last 28,688 bytes (Complete rewrote the short last part as a closing part, which
    # ends with the sealed table), then the data; later reads of the same version cost
    # one HEAD.
    before = backend_requests(stack.main)
    r = s3.get_object(Bucket=bucket, Key="pr", Range="bytes=100-200")
    assert r["Body"].read() == data[100:201] and r["ContentRange"] == f"bytes 100-200/{len(data)}"
    assert backend_requests(stack.main) - before == 1 + 1 + 1
    # A last part of 5 MiB or more is followed by the filter's end part, which seals the
    # table: the first ranged read is a HEAD, one read of the end part and the data.
    big = {1: pattern(5 * MiB + 1, 24), 2: pattern(5 * MiB, 25)}
    upload_parts(s3, bucket, "pr-big", big)
    before = backend_requests(stack.main)
    r = s3.get_object(Bucket=bucket, Key="pr-big", Range="bytes=-10")
    assert r["Body"].read() == big[2][-10:]
    assert backend_requests(stack.main) - before == 1 + 1 + 1
    g = s3.get_object(Bucket=bucket, Key="pr-big", PartNumber=2)
    assert g["Body"].read() == big[2] and g["PartsCount"] == 2
    before = backend_requests(stack.main)
    ranges = {
        f"bytes={p1 - 10}-{p1 + 10}": data[p1 - 10:p1 + 11],            # across a part boundary
        "bytes=7-": data[7:],                                             # all three parts
        "bytes=-500": data[-500:],                                        # suffix inside the last part
        f"bytes=-{1000 + 5}": data[-1005:],                               # suffix across a boundary
        f"bytes={len(data) - 1}-{len(data) + 100}": data[-1:],           # end clamped
        f"bytes={p1}-{p1}": data[p1:p1 + 1],                              # first byte of a part
    }
    for rng, want in ranges.items():
        r = s3.get_object(Bucket=bucket, Key="pr", Range=rng)
        assert r["ContentLength"] == len(want), rng
        assert r["Body"].read() == want, rng
    assert backend_requests(stack.main) - before == 2 * len(ranges)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="pr", Range=f"bytes={len(data)}-")
    assert e.value.response["Error"]["Code"] == "InvalidRange"
    # Part numbers: each part's plaintext with its own length and the part count.
    off = 0
    for n in sorted(parts):
        r = s3.get_object(Bucket=bucket, Key="pr", PartNumber=n)
        assert r["Body"].read() == parts[n], n
        assert r["ContentLength"] == len(parts[n]) and r["PartsCount"] == 3
        assert r["ContentRange"] == f"bytes {off}-{off + len(parts[n]) - 1}/{len(data)}"
        h = s3.head_object(Bucket=bucket, Key="pr", PartNumber=n)
        assert h["ContentLength"] == len(parts[n]) and h["PartsCount"] == 3
        off += len(parts[n])
    for bad in (4, 10000):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_object(Bucket=bucket, Key="pr", PartNumber=bad)
        assert e.value.response["Error"]["Code"] == "InvalidPartNumber"
    # Whole-object reads and HEAD stay exact.
    assert s3.head_object(Bucket=bucket, Key="pr")["ContentLength"] == len(data)
    assert s3.get_object(Bucket=bucket, Key="pr")["Body"].read() == data


def test_part_number_of_single_part_object(stack, bucket):
    s3 = stack.s3()
    data = pattern(200_000, 24)
    s3.put_object(Bucket=bucket, Key="one", Body=data)
    r = s3.get_object(Bucket=bucket, Key="one", PartNumber=1)
    assert r["Body"].read() == data and r["ContentLength"] == len(data)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="one", PartNumber=2)
    assert e.value.response["Error"]["Code"] == "InvalidPartNumber"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="one", PartNumber=1, Range="bytes=0-1")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_ranged_read_of_tampered_multipart_fails_closed(stack, bucket):
    s3 = stack.s3()
    parts = {1: pattern(5 * MiB, 25), 2: pattern(5 * MiB, 26)}
    upload_parts(s3, bucket, "tr", parts)
    stored = bytearray(stack.stored(bucket, "tr"))
    n = 5 * MiB + PART_OVERHEAD
    stored[n + 5000] ^= 1  # a bit in part 2's ciphertext
    # Stored again part by part (part 1, part 2, the filter's end part): only part 2 changed.
    stack.rewrite_stored_parts(bucket, "tr", [bytes(stored[:n]), bytes(stored[n:2 * n]), bytes(stored[2 * n:])])
    assert s3.get_object(Bucket=bucket, Key="tr", PartNumber=1)["Body"].read() == parts[1]
    with pytest.raises(Exception):
        s3.get_object(Bucket=bucket, Key="tr", PartNumber=2)["Body"].read()
    with pytest.raises(Exception):
        s3.get_object(Bucket=bucket, Key="tr", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 10000}")["Body"].read()


def test_restic_backup_check_restore(stack, bucket, tmp_path):
    """restic (minio-go) over plain http: large packs as aws-chunked signed bodies
    (STREAMING-AWS4-HMAC-SHA256-PAYLOAD); check --read-data reads every pack back through
    the filter. (restic 0.14 stores each pack with one PUT; multipart clients are above.)"""
    env = stack.client_env()
    env.update({"RESTIC_REPOSITORY": f"s3:{stack.endpoint}/{bucket}/repo", "RESTIC_PASSWORD": "restic-test",
                "RESTIC_CACHE_DIR": str(tmp_path / "cache")})
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    files = {src / "small.txt": b"hello restic\n", src / "a" / "empty": b""}
    for i in range(12):
        files[src / "a" / f"f{i}.bin"] = os.urandom(37_000 * (i + 1))
    files[src / "a" / "b" / "big.bin"] = os.urandom(90 * MiB)  # random: no dedup, no compression
    for p, d in files.items():
        p.write_bytes(d)
    run(["restic", "init"], env)
    run(["restic", "backup", "--pack-size", "64", str(src)], env)
    run(["restic", "check", "--read-data"], env)
    out = tmp_path / "restored"
    run(["restic", "restore", "latest", "--target", str(out)], env)
    for p, d in files.items():
        assert (out / p.relative_to("/")).read_bytes() == d, p
    # Every stored pack is ciphertext with an envelope; the largest is over 60 MiB.
    backend = stack.backend_s3()
    listed = backend.list_objects_v2(Bucket=bucket, Prefix="repo/data/")["Contents"]
    keys = [o["Key"] for o in listed]
    assert max(o["Size"] for o in listed) > 60 * MiB
    for k in keys:
        assert "s3crypt" in backend.head_object(Bucket=bucket, Key=k)["Metadata"]
    # A second backup of the unchanged tree uploads no file data again (restic finds every
    # data blob in the repository's index, read back through the filter): at most a small
    # pack of tree metadata (the parent directories' times changed: `restored/` is new).
    run(["restic", "backup", "--pack-size", "64", str(src)], env)
    again = backend.list_objects_v2(Bucket=bucket, Prefix="repo/data/")["Contents"]
    new = [o for o in again if o["Key"] not in keys]
    assert set(keys) <= {o["Key"] for o in again} and sum(o["Size"] for o in new) < 1 * MiB, new


def test_complete_and_multipart_copy_answer_the_objects_etag(stack, bucket):
    """RGW answers CompleteMultipartUpload with an empty <ETag> (HEAD has it): the filter
    fills in the md5-of-md5s-N of the part list it sent, in Complete and in a multipart
    CopyObject's result."""
    s3 = stack.s3()
    parts = {1: pattern(5 * MiB + 9, 34), 2: pattern(777, 35)}
    _, done = upload_parts(s3, bucket, "src", parts)
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert done["ETag"] == s3.head_object(Bucket=bucket, Key="src")["ETag"]
    assert r["CopyObjectResult"]["ETag"] == s3.head_object(Bucket=bucket, Key="dst")["ETag"]


def test_copy_object_of_multipart_object(stack, bucket):
    """CopyObject of a multipart object: a server-side multipart copy under the source's
    data key; no data passes through the filter."""
    s3 = stack.s3()
    parts = {1: pattern(5 * MiB + 9, 31), 2: pattern(5 * MiB, 32), 3: pattern(777, 33)}
    data = b"".join(parts[n] for n in sorted(parts))
    upload_parts(s3, bucket, "src", parts, metadata={"a": "1"})
    before = stack.counter("s3crypt_bytes_decrypted")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert s3.head_object(Bucket=bucket, Key="dst")["ETag"].endswith('-3"')
    g = s3.get_object(Bucket=bucket, Key="dst")
    assert g["Metadata"] == {"a": "1"} and g["ContentLength"] == len(data)
    assert stack.counter("s3crypt_bytes_decrypted") == before  # nothing was decrypted to copy
    assert g["Body"].read() == data
    assert s3.get_object(Bucket=bucket, Key="dst", PartNumber=2)["Body"].read() == parts[2]
    # REPLACE: the client's metadata; the data key stays the source's (in the envelope).
    s3.copy_object(Bucket=bucket, Key="dst2", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"b": "2"}, ContentType="text/x-test")
    g = s3.get_object(Bucket=bucket, Key="dst2")
    assert g["Metadata"] == {"b": "2"} and g["ContentType"] == "text/x-test"
    assert g["Body"].read() == data
    # The stored copy is ciphertext; a failed precondition copies nothing.
    assert parts[1][:1000] not in stack.stored(bucket, "dst")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="dst3", CopySource={"Bucket": bucket, "Key": "src"},
                       CopySourceIfMatch='"0123"')
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    s3.copy_object(Bucket=bucket, Key="dst4", CopySource={"Bucket": bucket, "Key": "src"}, CopySourceIfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="dst4")["Body"].read() == data
    assert "dst3" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_upload_part_copy(stack, bucket, tmp_path):
    """UploadPartCopy from a single-part, a multipart and a plaintext source, with and
    without x-amz-copy-source-range: the filter reads, decrypts and re-encrypts the range
    under the destination upload's data key."""
    s3 = stack.s3()
    single = pattern(300_000, 41)
    s3.put_object(Bucket=bucket, Key="single", Body=single)
    mparts = {1: pattern(5 * MiB + 3, 42), 2: pattern(5 * MiB, 43), 3: pattern(1000, 44)}
    multi = b"".join(mparts[n] for n in sorted(mparts))
    upload_parts(s3, bucket, "multi", mparts)
    plain = pattern(70_000, 45)
    stack.backend_s3().put_object(Bucket=bucket, Key="plain", Body=plain)  # no envelope

    def copy_upload(key, copies, s3=s3):
        """One multipart upload made of UploadPartCopy parts; checks and returns its object."""
        uid = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"k": "v"})["UploadId"]
        etags = {}
        for n, src, rng, _ in copies:
            kw = {"CopySourceRange": rng} if rng else {}
            r = s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n,
                                    CopySource={"Bucket": bucket, "Key": src}, **kw)
            etags[n] = r["CopyPartResult"]["ETag"]
        sizes = {p["PartNumber"]: p["Size"] for p in s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)["Parts"]}
        assert sizes == {n: len(want) for n, _, _, want in copies}
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]})
        want = b"".join(w for _, _, _, w in copies)
        g = s3.get_object(Bucket=bucket, Key=key)
        assert g["Metadata"] == {"k": "v"} and g["ContentLength"] == len(want)
        assert g["Body"].read() == want
        for n, _, _, w in copies:
            assert s3.get_object(Bucket=bucket, Key=key, PartNumber=n)["Body"].read() == w
        return stack.stored(bucket, key)

    before = stack.counter("s3crypt_bytes_decrypted")
    stored = copy_upload("dst", [  # (part number, source, range, expected bytes)
        (1, "multi", f"bytes={5 * MiB - 10}-{10 * MiB + 10}", multi[5 * MiB - 10:10 * MiB + 11]),
        (2, "multi", None, multi),
        (3, "single", None, single),
    ])
    assert stack.counter("s3crypt_bytes_decrypted") > before  # the data went through the filter
    assert single[:1000] not in stored and mparts[2][:1000] not in stored
    # Its short last part, copied, was staged too: Complete closed the object with it.
    at = (5 * MiB + 21) + len(multi) + 2 * PART_OVERHEAD
    assert stored[at:at + 8] == b"s3cC" + (3).to_bytes(4, "big")
    copy_upload("dst-single-range", [(1, "single", "bytes=65535-65537", single[65535:65538])])
    # A plaintext source is copied (and encrypted) only from a passthrough scope; without
    # one it is an integrity error, as a read of it would be.
    uid = s3.create_multipart_upload(Bucket=bucket, Key="dst-refused")["UploadId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part_copy(Bucket=bucket, Key="dst-refused", UploadId=uid, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "plain"})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert s3.list_parts(Bucket=bucket, Key="dst-refused", UploadId=uid).get("Parts", []) == []
    scoped = stack.start_envoy(plugin_extra={"passthrough_unencrypted": [f"{bucket}/plain"]})
    stored = copy_upload("dst-plain", [(1, "plain", "bytes=1-69999", plain[1:])], s3=scoped.s3())
    assert plain[1:1001] not in stored
    scoped.stop()
    # Re-copying a part number replaces the part.
    uid = s3.create_multipart_upload(Bucket=bucket, Key="re")["UploadId"]
    for rng in ("bytes=0-99", "bytes=100-299"):
        r = s3.upload_part_copy(Bucket=bucket, Key="re", UploadId=uid, PartNumber=1,
                                CopySource={"Bucket": bucket, "Key": "single"}, CopySourceRange=rng)
    s3.complete_multipart_upload(Bucket=bucket, Key="re", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="re")["Body"].read() == single[100:300]


def test_upload_part_copy_errors_store_nothing(stack, bucket):
    s3 = stack.s3()
    s3.put_object(Bucket=bucket, Key="src", Body=pattern(100_000, 46))
    etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    uid = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]

    def copy(**kw):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1, **kw)
        return e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"]

    src = {"Bucket": bucket, "Key": "src"}
    assert copy(CopySource=src, CopySourceRange="bytes=0-100000") == (400, "InvalidArgument")
    assert copy(CopySource=src, CopySourceIfMatch='"0123"') == (412, "PreconditionFailed")
    assert copy(CopySource=src, CopySourceIfNoneMatch=etag) == (412, "PreconditionFailed")
    assert copy(CopySource={"Bucket": bucket, "Key": "nope"}) == (404, "NoSuchKey")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId="not-an-upload", PartNumber=1, CopySource=src)
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    # A tampered source: integrity error, nothing stored, no plaintext anywhere.
    def flip(b):
        b[70_000] ^= 1
        return b

    stack.rewrite_stored(bucket, "src", flip)
    status, code = copy(CopySource=src)
    assert status == 500 and code == "InternalError"
    assert s3.list_parts(Bucket=bucket, Key="dst", UploadId=uid).get("Parts", []) == []
    # Parts above max_copy_part_bytes are refused with a clear error.
    small = stack.start_envoy(plugin_extra={"max_copy_part_bytes": 65536})
    s3s = small.s3()
    s3s.put_object(Bucket=bucket, Key="src2", Body=pattern(65537, 47))
    uid2 = s3s.create_multipart_upload(Bucket=bucket, Key="dst2")["UploadId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3s.upload_part_copy(Bucket=bucket, Key="dst2", UploadId=uid2, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src2"})
    assert e.value.response["Error"]["Code"] == "EntityTooLarge"
    assert "max_copy_part_bytes" in e.value.response["Error"]["Message"]
    r = s3s.upload_part_copy(Bucket=bucket, Key="dst2", UploadId=uid2, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src2"}, CopySourceRange="bytes=1-65536")
    s3s.complete_multipart_upload(Bucket=bucket, Key="dst2", UploadId=uid2, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="dst2")["Body"].read() == pattern(65537, 47)[1:]
    small.stop()


def test_aws_cli_copy_of_large_object(stack, bucket, tmp_path):
    """`aws s3 cp s3://… s3://…` above the multipart threshold: CreateMultipartUpload +
    UploadPartCopy of 8 MiB ranges + Complete, all through the filter."""
    aws, env = aws_cli_8mb_parts(stack, tmp_path)
    data = pattern(30 * MiB + 5, 48)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    run(aws + ["s3", "cp", str(src), f"s3://{bucket}/a.bin"], env)
    before = stack.counter("s3crypt_bytes_decrypted")
    run(aws + ["s3", "cp", f"s3://{bucket}/a.bin", f"s3://{bucket}/b.bin"], env)
    # UploadPartCopy re-encrypted every byte (CopyObject would have decrypted nothing).
    assert stack.counter("s3crypt_bytes_decrypted") - before == len(data)
    s3 = stack.s3()
    head = s3.head_object(Bucket=bucket, Key="b.bin")
    # Four parts (the last 6 MiB, so it can be followed): S3's ETag of the plaintext
    # parts; the backend's counts the filter's end part too.
    chunks = [data[i:i + 8 * MiB] for i in range(0, len(data), 8 * MiB)]
    want = '"%s-4"' % hashlib.md5(b"".join(hashlib.md5(c).digest() for c in chunks)).hexdigest()
    assert head["ETag"] == want and head["ContentLength"] == len(data)
    assert stack.backend_s3().head_object(Bucket=bucket, Key="b.bin")["ETag"].endswith('-5"')
    back = tmp_path / "back.bin"
    run(aws + ["s3", "cp", f"s3://{bucket}/b.bin", str(back)], env)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(data).digest()
