"""Second runs of sync tools through the filter onto RGW do no redundant work: what a
backup user's nightly job depends on. Each tool syncs a tree with small, single-part and
multipart files twice; the second run must upload nothing (checked by the backend: every
stored object keeps its ETag and LastModified). aws s3 sync compares listing sizes and
times; rclone --checksum and s3cmd compare listing ETags with local MD5s (rclone with
a 5 MiB upload cutoff, so that its 17 MiB file is a multipart upload too, then `rclone
check` by MD5). The bucket holds only ciphertext of every file."""

import pytest

from test_e2e_clients import rclone_env, run, venv_bin
from test_e2e_objects import pattern

MiB = 1 << 20


def tree(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    files = {"a.txt": b"hello sync\n", "empty": b"", "d/one.bin": pattern(3 * MiB + 5, 81),
             "d/multi.bin": pattern(17 * MiB + 3, 82)}
    for name, body in files.items():
        (src / name).write_bytes(body)
    return src, files


def stored_state(stack, bucket):
    b = stack.backend_s3()
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in b.list_objects_v2(Bucket=bucket).get("Contents", [])}


def check_second_run(stack, bucket, files, sync):
    sync()
    first = stored_state(stack, bucket)
    assert set(first) == set(files), first
    sync()
    assert stored_state(stack, bucket) == first, "the second run uploaded again"
    b = stack.backend_s3()
    for name, body in files.items():
        stored = b.get_object(Bucket=bucket, Key=name)["Body"].read()
        probe = body[:4096]
        assert len(stored) > len(body) or not body, name
        assert not probe or probe not in stored, f"{name}: plaintext stored"


def test_aws_s3_sync_second_run_uploads_nothing(stack, bucket, tmp_path):
    env = stack.client_env()
    src, files = tree(tmp_path)
    aws = [venv_bin("aws"), "--endpoint-url", stack.endpoint]
    outs = []
    check_second_run(stack, bucket, files, lambda: outs.append(run(aws + ["s3", "sync", str(src), f"s3://{bucket}/"], env)))
    assert "upload:" not in outs[-1], outs[-1]


def test_rclone_sync_checksum_second_run_uploads_nothing(stack, bucket, tmp_path):
    env = rclone_env(stack)
    env.update({"RCLONE_CONFIG_S3C_UPLOAD_CUTOFF": "5M", "RCLONE_CONFIG_S3C_CHUNK_SIZE": "5M"})
    src, files = tree(tmp_path)
    check_second_run(stack, bucket, files, lambda: run(["rclone", "sync", "--checksum", str(src), f"s3c:{bucket}"], env))
    assert stack.backend_s3().head_object(Bucket=bucket, Key="d/multi.bin")["ETag"].endswith('-4"')  # 4 parts
    # rclone check compares every file's MD5 (a multipart object's from the metadata
    # rclone stores with it) and size: it exits non-zero on any difference.
    run(["rclone", "check", str(src), f"s3c:{bucket}"], env)


def test_s3cmd_sync_second_run_uploads_nothing(stack, bucket, tmp_path):
    host = stack.endpoint.removeprefix("http://")
    cfg = tmp_path / "s3cfg"
    cfg.write_text(
        f"[default]\naccess_key = {stack.client_creds[0]}\nsecret_key = {stack.client_creds[1]}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\n"
        "bucket_location = us-east-1\ncheck_ssl_certificate = False\n"
    )
    env = stack.client_env()
    src, files = tree(tmp_path)
    s3cmd = [venv_bin("s3cmd"), "-c", str(cfg)]
    check_second_run(stack, bucket, files, lambda: run(s3cmd + ["sync", f"{src}/", f"s3://{bucket}/"], env))
