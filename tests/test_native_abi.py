"""The native module against the Envoy binary it is built for (native/ABI.md): every Envoy
callback it uses is one this Envoy exports, it exports every hook Envoy 1.40 resolves, it
reports ABI v0.2.0, and it links nothing but libc, libgcc_s and the loader."""

import re
import subprocess

from stack import NATIVE, envoy_binary

HOOKS = {
    "envoy_dynamic_module_on_program_init",
    "envoy_dynamic_module_on_http_filter_config_new", "envoy_dynamic_module_on_http_filter_config_destroy",
    "envoy_dynamic_module_on_http_filter_new", "envoy_dynamic_module_on_http_filter_destroy",
    "envoy_dynamic_module_on_http_filter_request_headers", "envoy_dynamic_module_on_http_filter_request_body",
    "envoy_dynamic_module_on_http_filter_request_trailers", "envoy_dynamic_module_on_http_filter_response_headers",
    "envoy_dynamic_module_on_http_filter_response_body", "envoy_dynamic_module_on_http_filter_response_trailers",
    "envoy_dynamic_module_on_http_filter_stream_complete", "envoy_dynamic_module_on_http_filter_http_callout_done",
    "envoy_dynamic_module_on_http_filter_http_stream_headers", "envoy_dynamic_module_on_http_filter_http_stream_data",
    "envoy_dynamic_module_on_http_filter_http_stream_trailers", "envoy_dynamic_module_on_http_filter_http_stream_complete",
    "envoy_dynamic_module_on_http_filter_http_stream_reset", "envoy_dynamic_module_on_http_filter_scheduled",
    "envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark",
    "envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark",
}


def symbols(path, *flags):
    out = subprocess.run(["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_module_binds_only_what_this_envoy_exports():
    used = {s for s in symbols(NATIVE, "--undefined-only") if s.startswith("envoy_")}
    exported = {s for s in symbols(envoy_binary(), "--defined-only") if s.startswith("envoy_dynamic_module_callback_")}
    assert used, "the module uses no Envoy callback?"
    assert used <= exported, sorted(used - exported)


def test_module_exports_every_hook_envoy_resolves():
    defined = {s for s in symbols(NATIVE, "--defined-only") if s.startswith("envoy_dynamic_module_on_")}
    assert HOOKS <= defined, sorted(HOOKS - defined)


def test_module_reports_abi_v0_2_0():
    strings = subprocess.run(["strings", str(NATIVE)], capture_output=True, text=True, check=True).stdout
    assert "v0.2.0" in strings.split()


def test_module_links_only_libc():
    out = subprocess.run(["readelf", "-d", str(NATIVE)], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"Shared library: \[([^\]]+)\]", out))
    assert needed <= {"libc.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2", "libm.so.6"}, needed
