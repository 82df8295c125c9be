"""Unmodified real clients through Envoy + s3crypt: aws CLI, rclone, s3cmd, boto3 with its
default checksum behaviour. Each writes, reads back and lists; the backend holds ciphertext."""

import hashlib
import os
import shutil
import subprocess

import pytest

from test_e2e_objects import cipher_len, pattern

MiB = 1 << 20


def run(cmd, env, **kw):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd[0]} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def venv_bin(name):
    """A console script of the project's virtualenv (aws, s3cmd)."""
    return os.path.join(os.path.dirname(os.sys.executable), name)


def test_aws_cli_cp_round_trip_100mib(stack, bucket, tmp_path):
    env = stack.client_env()
    # One single PUT of 100 MiB (multipart is covered in test_e2e_multipart.py).
    cfg = tmp_path / "aws.cfg"
    cfg.write_text("[default]\ns3 =\n  multipart_threshold = 5GB\n  multipart_chunksize = 5GB\n")
    env["AWS_CONFIG_FILE"] = str(cfg)
    src = tmp_path / "big.bin"
    data = pattern(100 * MiB, seed=100)
    src.write_bytes(data)
    aws = [venv_bin("aws"), "--endpoint-url", stack.endpoint]
    run(aws + ["s3", "cp", str(src), f"s3://{bucket}/dir/big.bin"], env)
    back = tmp_path / "back.bin"
    run(aws + ["s3", "cp", f"s3://{bucket}/dir/big.bin", str(back)], env)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(data).digest()
    listing = run(aws + ["s3", "ls", f"s3://{bucket}/dir/"], env)
    assert f"{100 * MiB} big.bin" in " ".join(listing.split())
    head = run(aws + ["s3api", "head-object", "--bucket", bucket, "--key", "dir/big.bin"], env)
    assert f'"ContentLength": {100 * MiB}' in head and "s3crypt" not in head
    assert stack.backend_s3().head_object(Bucket=bucket, Key="dir/big.bin")["ContentLength"] == cipher_len(100 * MiB)
    run(aws + ["s3", "rm", f"s3://{bucket}/dir/big.bin"], env)
    assert not stack.stored_exists(bucket, "dir/big.bin")


def test_boto3_default_checksums_and_upload_file(stack, bucket, tmp_path):
    s3 = stack.s3()
    data = pattern(3 * MiB + 17, seed=101)
    # boto3's defaults send x-amz-checksum-crc32 (verified by the filter, echoed back).
    r = s3.put_object(Bucket=bucket, Key="crc", Body=data)
    assert r["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    assert "ChecksumCRC32" in r
    g = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert g["Body"].read() == data  # boto3 validates the returned checksum while reading
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    from boto3.s3.transfer import TransferConfig
    cfg = TransferConfig(multipart_threshold=64 * MiB)
    s3.upload_file(str(f), bucket, "uf", Config=cfg)
    s3.download_file(bucket, "uf", str(tmp_path / "g.bin"), Config=cfg)
    assert (tmp_path / "g.bin").read_bytes() == data


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is installed by make setup")
def rclone_env(stack):
    """rclone's remote `s3c:` through Envoy."""
    env = stack.client_env()
    env.update({
        "RCLONE_CONFIG_S3C_TYPE": "s3", "RCLONE_CONFIG_S3C_PROVIDER": "Other",
        "RCLONE_CONFIG_S3C_ENDPOINT": stack.endpoint, "RCLONE_CONFIG_S3C_REGION": "us-east-1",
        "RCLONE_CONFIG_S3C_ACCESS_KEY_ID": stack.client_creds[0], "RCLONE_CONFIG_S3C_SECRET_ACCESS_KEY": stack.client_creds[1],
        "RCLONE_CONFIG_S3C_FORCE_PATH_STYLE": "true",
    })
    return env


def test_rclone_copy_and_check(stack, bucket, tmp_path):
    env = rclone_env(stack)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = {"a.txt": b"hello rclone", "sub/b.bin": pattern(5 * MiB + 3, seed=102), "empty": b"", "sub/c.bin": pattern(65537, seed=103)}
    for name, body in files.items():
        (src / name).write_bytes(body)
    run(["rclone", "copy", "--checksum", str(src), f"s3c:{bucket}"], env)
    # rclone verifies MD5s after upload and after download. (`check` by MD5 compares the
    # listing's ETags: test_rclone_check_by_md5.)
    run(["rclone", "check", "--size-only", str(src), f"s3c:{bucket}"], env)
    dst = tmp_path / "dst"
    run(["rclone", "copy", f"s3c:{bucket}", str(dst)], env)
    for name, body in files.items():
        assert (dst / name).read_bytes() == body, name
        assert stack.backend_s3().head_object(Bucket=bucket, Key=name)["ContentLength"] == cipher_len(len(body))
    sizes = run(["rclone", "lsl", f"s3c:{bucket}"], env)
    for name, body in files.items():
        assert any(line.split()[0] == str(len(body)) and line.endswith(name) for line in sizes.splitlines()), (name, sizes)


def test_rclone_check_by_md5(stack, bucket, tmp_path):
    env = rclone_env(stack)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"hello rclone")
    run(["rclone", "copy", str(src), f"s3c:{bucket}"], env)
    run(["rclone", "check", str(src), f"s3c:{bucket}"], env)


def test_s3cmd_put_get_ls(stack, bucket, tmp_path):
    host = stack.endpoint.removeprefix("http://")
    cfg = tmp_path / "s3cfg"
    cfg.write_text(
        f"[default]\naccess_key = {stack.client_creds[0]}\nsecret_key = {stack.client_creds[1]}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\n"
        "bucket_location = us-east-1\ncheck_ssl_certificate = False\n"
    )
    env = stack.client_env()
    s3cmd = [venv_bin("s3cmd"), "-c", str(cfg), "--disable-multipart"]
    data = pattern(2 * MiB + 1, seed=104)
    (tmp_path / "x.bin").write_bytes(data)
    out = run(s3cmd + ["put", str(tmp_path / "x.bin"), f"s3://{bucket}/x.bin"], env)
    assert "MD5 Sums don't match" not in out
    run(s3cmd + ["get", f"s3://{bucket}/x.bin", str(tmp_path / "y.bin")], env)
    assert (tmp_path / "y.bin").read_bytes() == data
    ls = run(s3cmd + ["ls", f"s3://{bucket}/"], env)
    assert str(len(data)) in ls.split()
    assert stack.stored(bucket, "x.bin")[:100] != data[:100]
