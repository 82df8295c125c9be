"""`make run` (scripts/run-local.py): the local stack starts, prints how to use it, serves
S3 through the filter onto Ceph RGW, and keeps the objects across a restart (bluestore
in the run directory). Run here on free ports in a temporary run directory."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import boto3

from stack import ROOT, client_config, free_port, free_port_block


def start(run_dir, ports):
    env = dict(os.environ, S3CRYPT_RUN_DIR=str(run_dir), S3CRYPT_PORT=str(ports["port"]),
               S3CRYPT_ADMIN_PORT=str(ports["admin"]), S3CRYPT_TLS_PORT=str(ports["tls"]),
               S3CRYPT_S3_PORT=str(ports["s3"]), S3CRYPT_CEPH_MON_PORT=str(ports["mon"]),
               S3CRYPT_CEPH_OSD_PORTS=f"{ports['osd']}-{ports['osd'] + 15}")
    log = open(run_dir.parent / "run-local.log", "ab")
    p = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run-local.py")], env=env, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        text = (run_dir.parent / "run-local.log").read_text(errors="replace")
        if text.count("s3crypt is running.") > getattr(start, "seen", 0):
            start.seen = text.count("s3crypt is running.")
            return p, text
        assert p.poll() is None, text[-3000:]
        time.sleep(0.5)
    raise AssertionError("run-local.py did not start in 180 s")


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(90)


def test_make_run_serves_and_keeps_objects(tmp_path):
    run_dir = tmp_path / "run"
    ports = {"port": free_port(), "admin": free_port(), "tls": free_port(), "s3": free_port(),
             "mon": free_port_block(2), "osd": free_port_block(16)}
    p, text = start(run_dir, ports)
    try:
        secrets = dict(line.split("=", 1) for line in (run_dir / "secrets.env").read_text().split())
        assert oct((run_dir / "secrets.env").stat().st_mode & 0o777) == "0o600"
        assert f"export AWS_ACCESS_KEY_ID={secrets['CLIENT_ACCESS_KEY']}" in text
        assert "AWS_CA_BUNDLE=" in text and "Ceph RGW" in text
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{ports['port']}", region_name="us-east-1",
                          config=client_config(), aws_access_key_id=secrets["CLIENT_ACCESS_KEY"],
                          aws_secret_access_key=secrets["CLIENT_SECRET"])
        s3.create_bucket(Bucket="demo")
        s3.put_object(Bucket="demo", Key="kept", Body=b"kept across restarts")
        backend = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{ports['s3']}", region_name="us-east-1",
                               config=client_config(), aws_access_key_id=secrets["BACKEND_ACCESS_KEY"],
                               aws_secret_access_key=secrets["BACKEND_SECRET"])
        assert b"kept across" not in backend.get_object(Bucket="demo", Key="kept")["Body"].read()
    finally:
        stop(p)
    p, _ = start(run_dir, ports)
    try:
        assert s3.get_object(Bucket="demo", Key="kept")["Body"].read() == b"kept across restarts"
        tls = boto3.client("s3", endpoint_url=f"https://127.0.0.1:{ports['tls']}", region_name="us-east-1",
                           config=client_config(), verify=str(run_dir / "tls" / "ca.pem"),
                           aws_access_key_id=secrets["CLIENT_ACCESS_KEY"], aws_secret_access_key=secrets["CLIENT_SECRET"])
        assert tls.get_object(Bucket="demo", Key="kept")["Body"].read() == b"kept across restarts"
    finally:
        stop(p)
    # The cluster's daemons stopped with it (rgw.sh removes a pid file once its daemon exited).
    assert not list((run_dir / "rgw" / "run").glob("*.pid"))
