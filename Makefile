# s3crypt — every entry point. `make run` and `make test` do all set-up themselves.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
WASM  := target/wasm32-wasip1/release/s3crypt.wasm

.PHONY: setup wasm oci chart-test unit lint e2e test run bench clean

setup:
	@scripts/setup.sh

wasm: setup
	cargo build --release --target wasm32-wasip1 -p s3crypt
	@ls -l $(WASM)

# The module as an OCI image layout (Istio Wasm image, compat variant) in target/oci/s3crypt.
oci: wasm
	$(PY) scripts/oci-image.py

# Helm chart and Istio manifests only (helm lint/template, kubernetes-validate, Envoy checks).
chart-test: wasm
	$(PY) -m pytest -v tests/test_deploy.py -k "(chart or istio) and not round_trip"

unit:
	cargo test -p s3crypt --release

lint:
	cargo clippy -p s3crypt --all-targets -- -D warnings
	cargo clippy -p s3crypt --target wasm32-wasip1 -- -D warnings
	cargo fmt --check

e2e: wasm oci
	$(PY) -m pytest -v tests/

test: setup unit lint wasm e2e

run: wasm
	$(PY) scripts/run-local.py

bench: wasm
	$(PY) bench/bench.py

clean:
	cargo clean
	rm -rf .run
