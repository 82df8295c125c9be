# s3crypt — every entry point. `make run` and `make test` do all set-up themselves.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
WASM  := target/wasm32-wasip1/release/s3crypt.wasm
NATIVE := target/native/libs3crypt_native.so
CLI    := target/release/s3crypt
PREFIX ?= $(HOME)/.local

.PHONY: toolchain setup wasm native cli install oci chart-test unit fuzz fuzz-smoke fuzz-seeds crypto-test-wasm lint e2e test run bench crypto-bench clean

# The Rust toolchain rust-toolchain.toml pins (rustup does not install it by itself).
toolchain:
	@scripts/toolchain.sh

setup:
	@scripts/setup.sh

wasm: setup
	cargo build --release --target wasm32-wasip1 -p s3crypt
	@ls -l $(WASM)

# The same filter as a native Envoy dynamic module for the pinned Envoy 1.40.0 (native/,
# README "Native build"); profile `native` = release with panics caught at the FFI boundary.
native: setup
	cargo build --profile native -p s3crypt-native
	@ls -l $(NATIVE)

# The `s3crypt` tool (cli/, README "Recovery and key rotation"): decrypt, verify, inspect,
# rewrap and import-s3proxy straight against the backend, without Envoy.
cli: toolchain
	cargo build --release -p s3crypt-cli
	@ls -l $(CLI)

# Installs the tool as $(PREFIX)/bin/s3crypt (PREFIX=$(HOME)/.local unless given).
install: cli
	install -D -m 0755 $(CLI) $(PREFIX)/bin/s3crypt
	@echo "installed $(PREFIX)/bin/s3crypt"

# The module as an OCI image layout (Istio Wasm image, compat variant) in target/oci/s3crypt.
oci: wasm
	$(PY) scripts/oci-image.py

# Helm chart and Istio manifests only (helm lint/template, kubernetes-validate, Envoy checks).
chart-test: wasm
	$(PY) -m pytest -v tests/test_deploy.py -k "(chart or istio) and not round_trip"

# The core twice: natively with RustCrypto AES-GCM, and with `ring` (the native module's).
unit: toolchain
	cargo test -p s3crypt-core -p benchtool --profile test-release
	cargo test -p s3crypt-core --features ring --profile test-release
	cargo test -p s3crypt-cli --profile test-release

# The fuzz targets in fuzz/ (README "Fuzzing"), FUZZ_SECONDS each, one after the other;
# fuzz-smoke is the short run of `make test`. Both install cargo-fuzz if it is missing.
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 10
fuzz: toolchain
	@scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-smoke: toolchain
	@scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

# Rewrites the committed seeds in fuzz/corpus (built without the fuzzing instrumentation).
fuzz-seeds:
	cd fuzz && cargo test --release --lib --target-dir ../target/fuzz-seeds -- --include-ignored --test-threads=1

# The fast AES-256-GCM's tests (NIST, Wycheproof, differential vs RustCrypto) compiled to
# wasm32-wasip1 with SIMD128 and run in V8 (node's WASI), where the filter uses it.
crypto-test-wasm: setup
	bench/crypto_test_wasm.sh

lint: toolchain
	cargo clippy -p s3crypt-core --all-targets --features harness -- -D warnings
	cargo clippy -p s3crypt-core --all-targets --features harness,ring -- -D warnings
	cargo clippy -p s3crypt-core -p s3crypt --target wasm32-wasip1 -- -D warnings
	cargo clippy -p cryptobench --all-targets -- -D warnings
	cargo clippy -p cryptobench --all-targets --target wasm32-wasip1 -- -D warnings
	cargo clippy -p benchtool --all-targets -- -D warnings
	cargo clippy -p s3crypt-native --all-targets -- -D warnings
	cargo clippy -p s3crypt-cli --all-targets -- -D warnings
	cargo fmt --check
	cd fuzz && cargo fmt --check

# The whole end-to-end suite against the wasm build, then again against the native build
# (S3CRYPT_BUILD=native; the chart/Istio, `make run` and `s3crypt` tool tests are wasm-only:
# the tool reads the backend, and test_e2e_builds reads each build's objects with the other).
e2e: wasm oci native cli
	$(PY) -m pytest -v tests/
	S3CRYPT_BUILD=native $(PY) -m pytest -v tests/ --ignore=tests/test_deploy.py --ignore=tests/test_run_local.py --ignore=tests/test_cli.py

test: setup unit fuzz-smoke crypto-test-wasm lint wasm native cli e2e

# S3CRYPT_BUILD=native make run: the same stack with the native build of the filter.
run: wasm cli $(if $(filter native,$(S3CRYPT_BUILD)),native)
	$(PY) scripts/run-local.py

# End to end (docs/BENCHMARKS.md "make bench" section), then the frame AEADs in V8 and natively.
bench: wasm native
	$(PY) bench/bench.py
	$(PY) bench/crypto_bench.py --write

crypto-bench: setup
	$(PY) bench/crypto_bench.py --write

clean:
	cargo clean
	rm -rf .run
