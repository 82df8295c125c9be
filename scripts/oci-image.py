#!/usr/bin/env python3
"""Packs the built s3crypt.wasm as an OCI image in the Istio Wasm image "compat" variant and
writes it as an OCI image layout directory (no registry, no container engine, stdlib only):

    target/oci/s3crypt/oci-layout
    target/oci/s3crypt/index.json              -> the manifest, tagged <version> (Cargo version)
    target/oci/s3crypt/blobs/sha256/<digest>   -> manifest, image config, layer

The image has exactly one layer, media type application/vnd.oci.image.layer.v1.tar+gzip,
holding one file, plugin.wasm; the manifest carries the annotation
module.wasm.image/variant=compat. Istio's WasmPlugin (url: oci://...) pulls it, and a
Kubernetes image volume can mount it (plugin.wasm at the volume's root).

The output is deterministic: fixed mtimes/owners in the tar, gzip without timestamp or
name, canonical JSON. The same module gives the same manifest digest, which is printed and
written to target/oci/s3crypt.digest.

Push it with any tool that reads OCI layouts, for example
    skopeo copy --preserve-digests oci:target/oci/s3crypt:0.1.0 docker://REGISTRY/s3crypt:0.1.0
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import sys
import tarfile
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "s3crypt.wasm"
OUT = ROOT / "target" / "oci" / "s3crypt"

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
VARIANT = "module.wasm.image/variant"
EPOCH = 0  # every timestamp in the image


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def crate_version():
    text = (ROOT / "wasm" / "Cargo.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def layer_tar(wasm: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(wasm), 0o644, EPOCH
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=EPOCH) as gz:
        gz.write(data)
    return buf.getvalue()


def build(wasm_path, out, tag, platform="linux/amd64"):
    """Writes the layout to `out` (replaced whole) and returns the manifest digest."""
    wasm = pathlib.Path(wasm_path).read_bytes()
    if wasm[:4] != b"\0asm":
        raise SystemExit(f"{wasm_path} is not a WebAssembly module")
    os_name, arch = platform.split("/", 1)
    blobs = {}

    def blob(media_type, data, **extra):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    tar = layer_tar(wasm)
    layer = blob(LAYER, gzip_bytes(tar), annotations={"org.opencontainers.image.title": "plugin.wasm"})
    # A scratch image: no executable, so the platform is nominal (it is what `docker build`
    # FROM scratch would write); it matters only to runtimes that mount it as an image volume.
    config = blob(CONFIG, canonical({
        "architecture": arch,
        "os": os_name,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created_by": "scripts/oci-image.py: plugin.wasm", "created": "1970-01-01T00:00:00Z"}],
    }))
    manifest = blob(MANIFEST, canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": [layer],
        "annotations": {
            VARIANT: "compat",
            "org.opencontainers.image.title": "s3crypt",
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.description": "s3crypt proxy-wasm filter (Istio Wasm image, compat variant)",
        },
    }), annotations={"org.opencontainers.image.ref.name": tag})
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [manifest]}

    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        (tmp / "blobs" / "sha256").mkdir(parents=True)
        for digest, data in blobs.items():
            (tmp / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        (tmp / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
        (tmp / "index.json").write_bytes(canonical(index))
        for p in tmp.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest["digest"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wasm", default=str(WASM), help="module to pack (default: the release build)")
    ap.add_argument("--out", default=str(OUT), help="OCI layout directory to write (replaced)")
    ap.add_argument("--tag", default=None, help="tag in index.json (default: the crate version)")
    ap.add_argument("--platform", default="linux/amd64", help="os/arch written in the image config")
    ap.add_argument("--digest-file", default=None, help="where to record the digest (default: <out>.digest)")
    a = ap.parse_args()
    digest = build(a.wasm, a.out, a.tag or crate_version(), a.platform)
    pathlib.Path(a.digest_file or a.out.rstrip("/") + ".digest").write_text(digest + "\n")
    print(digest)


if __name__ == "__main__":
    sys.exit(main())
