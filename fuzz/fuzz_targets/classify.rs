//! Request classification (`s3::parse_request`) of arbitrary requests.
//!
//! Input: a first line of comma-separated virtual-host suffixes, then a request in the
//! `Request` text format (method, `:path`, `name:value` headers).
//!
//! - no panic;
//! - an accepted request is one entry of the operation table, the only most specific one
//!   that matches it: its method, level, parameters and copy source;
//! - its bucket and key pass the checks, and its upstream path (path style) parses back to
//!   the same operation, bucket, key and query.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3crypt_core::auth::sigv4::strip_presign_params;
use s3crypt_core::s3::table::{self, ALWAYS_ALLOWED};
use s3crypt_core::s3::{check_bucket, check_key, parse_request, Level};
use s3crypt_fuzz::Request;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let suffixes: Vec<String> = first.split(',').map(str::to_string).collect();
    let req = Request::parse(rest);
    let path = strip_presign_params(&req.path);
    let Ok(r) = parse_request(&req.method, &path, &req.headers, &suffixes) else {
        return;
    };

    let s = r.spec;
    assert_eq!((r.op, s.method), (s.op, req.method.as_str()));
    let level = match (&r.bucket, &r.key) {
        (None, None) => Level::Service,
        (Some(_), None) => Level::Bucket,
        (Some(_), Some(_)) => Level::Object,
        (None, Some(_)) => panic!("a key without a bucket"),
    };
    assert_eq!(s.level, level);
    assert_eq!(s.copy_source, req.headers.contains("x-amz-copy-source"));
    let names: Vec<&str> = r.query.iter().map(|(k, _)| k.as_str()).collect();
    assert!(s.sub.iter().all(|p| names.contains(p)));
    assert!(names
        .iter()
        .all(|n| s.sub.contains(n) || s.params.contains(n) || ALWAYS_ALLOWED.contains(n)));
    // The table has this entry, and no other entry matches as specifically.
    let rivals = table::all()
        .filter(|o| o.method == s.method && o.level == s.level && o.copy_source == s.copy_source)
        .filter(|o| o.sub.len() == s.sub.len() && o.sub.iter().all(|p| names.contains(p)))
        .filter(|o| {
            names
                .iter()
                .all(|n| o.sub.contains(n) || o.params.contains(n) || ALWAYS_ALLOWED.contains(n))
        })
        .collect::<Vec<_>>();
    assert_eq!(rivals, [s], "not exactly one most specific table entry");

    if let Some(b) = &r.bucket {
        assert!(check_bucket(b).is_ok());
    }
    if let Some(k) = &r.key {
        assert!(check_key(k).is_ok());
    }

    // What goes upstream means the same request.
    let up = r.upstream_path();
    let mut h = req.headers.clone();
    h.remove(":authority");
    h.remove("host");
    let again = parse_request(&req.method, &up, &h, &[])
        .unwrap_or_else(|e| panic!("upstream path {up:?} refused: {e:?}"));
    assert_eq!(
        (
            again.spec,
            &again.bucket,
            &again.key,
            &again.query,
            again.virtual_host
        ),
        (s, &r.bucket, &r.key, &r.query, false),
        "upstream path {up:?}"
    );
});
