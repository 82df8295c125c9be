//! `s3sink`: a benchmark-only S3 server that keeps objects in memory and does no work per
//! byte beyond moving it (no MD5, no signature checks, no disk), so that a benchmark
//! through Envoy measures Envoy and the filter, not the backend. `make bench` checks it:
//! direct-to-sink throughput must be at least 3× Envoy passthrough's.
//!
//! It answers what the filter and the load generator send: CreateBucket/HeadBucket,
//! PutObject, GetObject/HeadObject (one range, partNumber), DeleteObject,
//! Create/UploadPart/Complete/AbortMultipartUpload, ListParts. Object ETags are unique
//! per write (a counter, shaped like an MD5) rather than digests; part ETags are the
//! parts' MD5 (the filter relies on that, as on S3), the multipart ETag S3's MD5 of them. Anything else is a 501 and is printed to stderr,
//! so a benchmark that hits something unexpected fails loudly instead of measuring it.
//! Not a test backend: the end-to-end tests use Ceph RGW.
//!
//! Usage: `s3sink [PORT]` (0 or none: any free port), prints `listening PORT` when ready;
//! with S3SINK_LOG set, every request is logged to stderr (debugging only).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use md5::Digest as _;

use benchtool::{http_date, now, read_body, read_head, write_head, Head};

struct Object {
    body: Vec<u8>,
    /// Metadata and content headers as stored (`x-amz-meta-*`, `content-type`, …).
    meta: Vec<(String, String)>,
    etag: String,
    modified: i64,
    /// Part sizes of a multipart object (for `partNumber` reads).
    parts: Vec<usize>,
}

impl Drop for Object {
    fn drop(&mut self) {
        benchtool::pool::give(std::mem::take(&mut self.body));
    }
}

struct Upload {
    key: String,
    meta: Vec<(String, String)>,
    parts: BTreeMap<u32, Arc<(Vec<u8>, String)>>,
}

#[derive(Default)]
struct Store {
    objects: Mutex<HashMap<String, Arc<Object>>>,
    uploads: Mutex<HashMap<String, Upload>>,
    counter: AtomicU64,
}

impl Store {
    fn etag(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("\"{:016x}{:016x}\"", now() as u64, n)
    }
}

/// Headers a PUT stores with the object and GET/HEAD return.
fn stored_headers(h: &Head) -> Vec<(String, String)> {
    h.headers
        .iter()
        .filter(|(k, _)| {
            k.starts_with("x-amz-meta-")
                || matches!(
                    k.as_str(),
                    "content-type"
                        | "content-disposition"
                        | "content-language"
                        | "cache-control"
                        | "expires"
                        | "x-amz-server-side-encryption"
                        | "x-amz-storage-class"
                )
        })
        .cloned()
        .collect()
}

struct Reply {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    /// `len` bytes of an object from `at` (or only its length, for HEAD).
    Slice(Arc<Object>, usize, usize, bool),
}

fn xml(status: &'static str, body: String) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/xml".into())],
        body: Body::Bytes(body.into_bytes()),
    }
}

fn error(status: &'static str, code: &str, msg: &str) -> Reply {
    xml(
        status,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message></Error>"),
    )
}

fn ok_empty() -> Reply {
    Reply {
        status: "200 OK",
        headers: Vec::new(),
        body: Body::Bytes(Vec::new()),
    }
}

fn query_param<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against `len`: the first byte and the count, or
/// `None` when it cannot be satisfied.
fn range(spec: &str, len: usize) -> Option<(usize, usize)> {
    let r = spec.strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    if a.is_empty() {
        let n: usize = b.parse().ok()?;
        if n == 0 || len == 0 {
            return None;
        }
        let n = n.min(len);
        return Some((len - n, n));
    }
    let a: usize = a.parse().ok()?;
    if a >= len {
        return None;
    }
    let end = if b.is_empty() {
        len - 1
    } else {
        b.parse::<usize>().ok()?.min(len - 1)
    };
    (end >= a).then(|| (a, end - a + 1))
}

fn object_reply(o: Arc<Object>, h: &Head, query: &str, head_only: bool) -> Reply {
    let len = o.body.len();
    let mut headers: Vec<(&'static str, String)> = vec![
        ("etag", o.etag.clone()),
        ("last-modified", http_date(o.modified)),
        ("accept-ranges", "bytes".into()),
    ];
    let mut status = "200 OK";
    let (mut at, mut n) = (0, len);
    if let Some(pn) = query_param(query, "partNumber") {
        let Ok(pn) = pn.parse::<usize>() else {
            return error("400 Bad Request", "InvalidArgument", "partNumber");
        };
        let sizes = if o.parts.is_empty() {
            vec![len]
        } else {
            o.parts.clone()
        };
        if pn == 0 || pn > sizes.len() {
            return error(
                "416 Requested Range Not Satisfiable",
                "InvalidPartNumber",
                "part",
            );
        }
        at = sizes[..pn - 1].iter().sum();
        n = sizes[pn - 1];
        if !o.parts.is_empty() {
            headers.push(("x-amz-mp-parts-count", o.parts.len().to_string()));
        }
        status = "206 Partial Content";
        headers.push(("content-range", format!("bytes {at}-{}/{len}", at + n - 1)));
    } else if let Some(spec) = h.get("range") {
        match range(spec, len) {
            Some((a, k)) => {
                (at, n) = (a, k);
                status = "206 Partial Content";
                headers.push(("content-range", format!("bytes {a}-{}/{len}", a + k - 1)));
            }
            None => {
                return error(
                    "416 Requested Range Not Satisfiable",
                    "InvalidRange",
                    "range",
                )
            }
        }
    }
    for (k, v) in &o.meta {
        // `&'static str` names: the stored ones are leaked once per distinct name below.
        headers.push((intern(k), v.clone()));
    }
    Reply {
        status,
        headers,
        body: Body::Slice(o, at, n, head_only),
    }
}

/// Header names of stored metadata, as `&'static str` (a small, bounded set per run).
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

fn complete(store: &Store, key: &str, upload_id: &str, body: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(body);
    let numbers: Vec<u32> = text
        .split("<PartNumber>")
        .skip(1)
        .filter_map(|s| s.split("</PartNumber>").next()?.trim().parse().ok())
        .collect();
    let Some(up) = store
        .uploads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(upload_id)
    else {
        return error("404 Not Found", "NoSuchUpload", "upload");
    };
    if up.key != key || numbers.is_empty() {
        return error("400 Bad Request", "InvalidPart", "parts");
    }
    let mut data = Vec::new();
    let mut sizes = Vec::new();
    for n in &numbers {
        let Some(p) = up.parts.get(n) else {
            return error("400 Bad Request", "InvalidPart", "part missing");
        };
        data.extend_from_slice(&p.0);
        sizes.push(p.0.len());
    }
    // As S3 does: the MD5 of the parts' binary ETags, and the part count.
    let mut md = md5::Md5::new();
    for n in &numbers {
        if let Some(p) = up.parts.get(n) {
            md.update(hex::decode(p.1.trim_matches('"')).unwrap_or_default());
        }
    }
    let etag = format!("\"{}-{}\"", hex::encode(md.finalize()), numbers.len());
    let o = Object {
        body: data,
        meta: up.meta,
        etag: etag.clone(),
        modified: now(),
        parts: sizes,
    };
    store
        .objects
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.to_string(), Arc::new(o));
    xml(
        "200 OK",
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>", key, etag.replace('"', "&quot;")),
    )
}

/// ListParts, all parts in one page.
fn list_parts(store: &Store, key: &str, upload_id: &str) -> Reply {
    let ups = store.uploads.lock().unwrap_or_else(|e| e.into_inner());
    let Some(up) = ups.get(upload_id).filter(|u| u.key == key) else {
        return error("404 Not Found", "NoSuchUpload", "upload");
    };
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListPartsResult>");
    x.push_str(&format!(
        "<UploadId>{upload_id}</UploadId><IsTruncated>false</IsTruncated>"
    ));
    let date = s3crypt_core::auth::sigv4::amz_date(now());
    let iso = format!(
        "{}-{}-{}T{}:{}:{}.000Z",
        &date[..4],
        &date[4..6],
        &date[6..8],
        &date[9..11],
        &date[11..13],
        &date[13..15]
    );
    for (n, p) in &up.parts {
        x.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><LastModified>{iso}</LastModified><ETag>{}</ETag><Size>{}</Size></Part>",
            p.1.replace('"', "&quot;"),
            p.0.len()
        ));
    }
    x.push_str("</ListPartsResult>");
    xml("200 OK", x)
}

fn handle(store: &Store, h: &Head, body: Vec<u8>) -> Reply {
    let mut it = h.line.split(' ');
    let (method, target) = (it.next().unwrap_or(""), it.next().unwrap_or("/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments = path.trim_start_matches('/').split_once('/');
    let is_object = segments.is_some_and(|(_, k)| !k.is_empty());
    let upload_id = query_param(query, "uploadId");
    match (method, is_object) {
        ("PUT" | "HEAD" | "DELETE", false) => ok_empty(),
        ("GET", false) if path == "/" => xml(
            "200 OK",
            "<ListAllMyBucketsResult><Buckets/></ListAllMyBucketsResult>".into(),
        ),
        ("GET", false) if query.contains("location") => xml(
            "200 OK",
            "<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>".into(),
        ),
        ("PUT", true) if h.get("x-amz-copy-source").is_some() => {
            error("501 Not Implemented", "NotImplemented", "copy")
        }
        ("PUT", true) => {
            // A part's ETag is the MD5 of its bytes, as S3's without SSE-KMS: the filter
            // checks the short last part it staged by it (and writes the closing part).
            let etag = match upload_id {
                Some(_) => format!("\"{}\"", hex::encode(md5::Md5::digest(&body))),
                None => store.etag(),
            };
            if let Some(id) = upload_id {
                let Some(pn) = query_param(query, "partNumber").and_then(|n| n.parse().ok()) else {
                    return error("400 Bad Request", "InvalidArgument", "partNumber");
                };
                let mut ups = store.uploads.lock().unwrap_or_else(|e| e.into_inner());
                let Some(up) = ups.get_mut(id) else {
                    return error("404 Not Found", "NoSuchUpload", "upload");
                };
                up.parts.insert(pn, Arc::new((body, etag.clone())));
            } else {
                let o = Object {
                    body,
                    meta: stored_headers(h),
                    etag: etag.clone(),
                    modified: now(),
                    parts: Vec::new(),
                };
                store
                    .objects
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(path.to_string(), Arc::new(o));
            }
            Reply {
                status: "200 OK",
                headers: vec![("etag", etag)],
                body: Body::Bytes(Vec::new()),
            }
        }
        ("GET" | "HEAD", true) if upload_id.is_none() => {
            let o = store
                .objects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(path)
                .cloned();
            match o {
                Some(o) => object_reply(o, h, query, method == "HEAD"),
                None => error("404 Not Found", "NoSuchKey", "key"),
            }
        }
        ("GET", true) => list_parts(store, path, upload_id.unwrap_or_default()),
        ("DELETE", true) => {
            if let Some(id) = upload_id {
                store
                    .uploads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
            } else {
                store
                    .objects
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(path);
            }
            Reply {
                status: "204 No Content",
                headers: Vec::new(),
                body: Body::Bytes(Vec::new()),
            }
        }
        ("POST", true) if query_param(query, "uploads").is_some() => {
            let id = store.etag().trim_matches('"').to_string();
            store
                .uploads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    id.clone(),
                    Upload {
                        key: path.to_string(),
                        meta: stored_headers(h),
                        parts: BTreeMap::new(),
                    },
                );
            let (bucket, key) = segments.unwrap_or(("", ""));
            xml(
                "200 OK",
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"),
            )
        }
        ("POST", true) if upload_id.is_some() => {
            complete(store, path, upload_id.unwrap_or_default(), &body)
        }
        _ => {
            eprintln!("s3sink: not implemented: {}", h.line);
            error(
                "501 Not Implemented",
                "NotImplemented",
                "not implemented by s3sink",
            )
        }
    }
}

fn serve(store: Arc<Store>, conn: TcpStream) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut r = BufReader::with_capacity(256 * 1024, conn.try_clone()?);
    let mut w = BufWriter::with_capacity(64 * 1024, conn);
    while let Some(h) = read_head(&mut r)? {
        let is_put = h.line.starts_with("PUT ") || h.line.starts_with("POST ");
        let (_, body) = read_body(&mut r, &h, is_put)?;
        let reply = handle(&store, &h, body);
        if std::env::var_os("S3SINK_LOG").is_some() {
            eprintln!(
                "{} range={:?} if-match={:?} -> {} {:?}",
                h.line,
                h.get("range"),
                h.get("if-match"),
                reply.status,
                reply.headers.iter().find(|(k, _)| *k == "etag")
            );
        }
        let mut headers = reply.headers;
        headers.push(("date", http_date(now())));
        headers.push(("x-amz-request-id", "s3sink".into()));
        match reply.body {
            Body::Bytes(b) => {
                headers.push(("content-length", b.len().to_string()));
                write_head(&mut w, &format!("HTTP/1.1 {}", reply.status), &headers)?;
                w.write_all(&b)?;
            }
            Body::Slice(o, at, n, head_only) => {
                headers.push(("content-length", n.to_string()));
                write_head(&mut w, &format!("HTTP/1.1 {}", reply.status), &headers)?;
                if !head_only {
                    w.write_all(&o.body[at..at + n])?;
                }
            }
        }
        w.flush()?;
        if h.close() {
            break;
        }
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("listening {}", listener.local_addr()?.port());
    io::stdout().flush()?;
    let store = Arc::new(Store::default());
    for conn in listener.incoming() {
        let conn = conn?;
        let store = store.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(store, conn) {
                if e.kind() != io::ErrorKind::UnexpectedEof
                    && e.kind() != io::ErrorKind::ConnectionReset
                {
                    eprintln!("s3sink: connection: {e}");
                }
            }
        });
    }
    Ok(())
}
