//! `s3load`: the benchmark's load generator. Native, one thread and one keep-alive
//! connection per stream, bodies sent from one shared in-memory buffer and every GET body
//! compared with it as it arrives, requests signed as the AWS SDKs sign them (SigV4
//! header, with `UNSIGNED-PAYLOAD`, the payload's SHA-256, or aws-chunked
//! `STREAMING-UNSIGNED-PAYLOAD-TRAILER` with a CRC32 trailer). Digests of the body are
//! computed once before the clock starts, so the client hashes nothing while it is timed.
//!
//! Prints one JSON object: bytes moved, wall seconds, requests, latency p50/p99/max (ms)
//! and the process's own CPU seconds (to show it is not the bottleneck).
//!
//! ```text
//! s3load --endpoint 127.0.0.1:PORT --bucket B --prefix K --op put|get|range|multipart
//!        [--auth unsigned|signed|chunked-crc] [--size BYTES] [--streams N]
//!        [--count REQUESTS_PER_STREAM] [--range BYTES] [--part BYTES]
//! ```
//! Credentials: S3LOAD_ACCESS_KEY_ID, S3LOAD_SECRET_ACCESS_KEY. Keys are `K-<stream>`:
//! `put` writes them, `get` and `range` read them (written before with the same size).

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use benchtool::{bad, read_body, read_head, Head};
use s3crypt_core::harness::client::{Payload, Request};
use sha2::{Digest as _, Sha256};

const REGION: &str = "us-east-1";
const AWS_CHUNK: usize = 64 * 1024;

#[derive(Clone)]
struct Opts {
    endpoint: String,
    bucket: String,
    prefix: String,
    op: String,
    auth: String,
    size: usize,
    streams: usize,
    count: usize,
    range: usize,
    part: usize,
    ak: String,
    sk: String,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        endpoint: String::new(),
        bucket: "bench".into(),
        prefix: "obj".into(),
        op: "put".into(),
        auth: "unsigned".into(),
        size: 1 << 20,
        streams: 1,
        count: 1,
        range: 1 << 20,
        part: 8 << 20,
        ak: std::env::var("S3LOAD_ACCESS_KEY_ID").map_err(|_| "S3LOAD_ACCESS_KEY_ID unset")?,
        sk: std::env::var("S3LOAD_SECRET_ACCESS_KEY")
            .map_err(|_| "S3LOAD_SECRET_ACCESS_KEY unset")?,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [k, v] = pair else {
            return Err(format!("{pair:?}: every option takes a value"));
        };
        let num = || {
            v.parse::<usize>()
                .map_err(|_| format!("{k} {v}: not a number"))
        };
        match k.as_str() {
            "--endpoint" => o.endpoint = v.clone(),
            "--bucket" => o.bucket = v.clone(),
            "--prefix" => o.prefix = v.clone(),
            "--op" => o.op = v.clone(),
            "--auth" => o.auth = v.clone(),
            "--size" => o.size = num()?,
            "--streams" => o.streams = num()?.max(1),
            "--count" => o.count = num()?.max(1),
            "--range" => o.range = num()?.max(1),
            "--part" => o.part = num()?.max(1),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if o.endpoint.is_empty() {
        return Err("--endpoint is required".into());
    }
    Ok(o)
}

/// Deterministic, incompressible bytes (xorshift64*).
fn data(n: usize) -> Vec<u8> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        v.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(n);
    v
}

/// What is computed once per body before the clock starts.
struct Prepared {
    data: Vec<u8>,
    sha256: String,
    crc32: String,
}

struct Conn {
    opts: Opts,
    r: BufReader<TcpStream>,
    w: TcpStream,
}

/// A signed request head for `body_len` bytes (or the framed length of an aws-chunked body).
fn head(
    o: &Opts,
    method: &str,
    path: &str,
    extra: &[(&str, String)],
    body: Option<(usize, &Prepared)>,
) -> String {
    let mut req = Request::new(method, path).creds(&o.ak, &o.sk);
    for (k, v) in extra {
        req = req.header(k, v);
    }
    match body {
        None => {
            req = req.payload(Payload::Literal(
                s3crypt_core::auth::sigv4::EMPTY_SHA256.into(),
            ))
        }
        Some((len, p)) => match o.auth.as_str() {
            "signed" => {
                req = req
                    .header("content-length", &len.to_string())
                    .payload(Payload::Literal(p.sha256.clone()))
            }
            "chunked-crc" => {
                req = req
                    .header("content-length", &chunked_len(len).to_string())
                    .header("content-encoding", "aws-chunked")
                    .header("x-amz-decoded-content-length", &len.to_string())
                    .header("x-amz-trailer", "x-amz-checksum-crc32")
                    .header("x-amz-sdk-checksum-algorithm", "CRC32")
                    .payload(Payload::Literal(
                        "STREAMING-UNSIGNED-PAYLOAD-TRAILER".into(),
                    ))
            }
            _ => {
                req = req
                    .header("content-length", &len.to_string())
                    .payload(Payload::Unsigned)
            }
        },
    }
    let now = benchtool::now();
    let (h, _) = req.prepare(&o.endpoint, REGION, now);
    let mut s = format!(
        "{method} {} HTTP/1.1\r\nhost: {}\r\n",
        h.get(":path").unwrap_or(path),
        o.endpoint
    );
    for (k, v) in h.0.iter() {
        if k.starts_with(':') || k == "x-forwarded-proto" || k == "host" {
            continue;
        }
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s
}

fn chunked_len(len: usize) -> usize {
    let mut n = 0;
    let mut left = len;
    while left > 0 {
        let c = left.min(AWS_CHUNK);
        n += format!("{c:x}").len() + 2 + c + 2;
        left -= c;
    }
    n + "0\r\n".len() + "x-amz-checksum-crc32:".len() + 8 + 2 + 2
}

impl Conn {
    fn open(o: &Opts) -> io::Result<Conn> {
        let s = TcpStream::connect(&o.endpoint)?;
        s.set_nodelay(true)?;
        Ok(Conn {
            opts: o.clone(),
            r: BufReader::with_capacity(256 * 1024, s.try_clone()?),
            w: s,
        })
    }

    fn send_body(&mut self, body: &[u8], p: &Prepared) -> io::Result<()> {
        // aws-chunked exactly when the head announced it (a CRC trailer to send).
        if p.crc32.is_empty() {
            return self.w.write_all(body);
        }
        for c in body.chunks(AWS_CHUNK) {
            self.w.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
            self.w.write_all(c)?;
            self.w.write_all(b"\r\n")?;
        }
        self.w
            .write_all(format!("0\r\nx-amz-checksum-crc32:{}\r\n\r\n", p.crc32).as_bytes())
    }

    /// Sends a request, reads the response; GET bodies are compared with `expect`.
    fn exchange(
        &mut self,
        head: &str,
        body: Option<(&[u8], &Prepared)>,
        expect: Option<&[u8]>,
    ) -> io::Result<(Head, Vec<u8>)> {
        self.w.write_all(head.as_bytes())?;
        if let Some((b, p)) = body {
            self.send_body(b, p)?;
        }
        let h = read_head(&mut self.r)?.ok_or_else(|| bad("connection closed"))?;
        let status: u16 = h
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let resp = match expect {
            Some(want) if (200..300).contains(&status) => {
                if h.chunked() {
                    return Err(bad("chunked GET response: cannot verify as it streams"));
                }
                let len = h.content_length()?.unwrap_or(0);
                if len != want.len() as u64 {
                    return Err(bad(format!("GET: {len} bytes, expected {}", want.len())));
                }
                let mut at = 0;
                while at < want.len() {
                    let buf = self.r.fill_buf()?;
                    if buf.is_empty() {
                        return Err(bad("GET body truncated"));
                    }
                    let k = buf.len().min(want.len() - at);
                    if buf[..k] != want[at..at + k] {
                        return Err(bad(format!("GET body differs near byte {at}")));
                    }
                    self.r.consume(k);
                    at += k;
                }
                Vec::new()
            }
            _ => read_body(&mut self.r, &h, true)?.1,
        };
        if !(200..300).contains(&status) {
            return Err(bad(format!(
                "{}: {}",
                h.line,
                String::from_utf8_lossy(&resp)
            )));
        }
        if h.close() {
            *self = Conn::open(&self.opts)?;
        }
        Ok((h, resp))
    }
}

/// One stream's work; returns (bytes, per-request latencies in seconds).
fn stream(o: &Opts, p: &Prepared, i: usize) -> io::Result<(u64, Vec<f64>)> {
    let mut c = Conn::open(o)?;
    let key = format!("/{}/{}-{i}", o.bucket, o.prefix);
    let body = &p.data[..o.size];
    let mut lat = Vec::with_capacity(o.count);
    let mut bytes = 0u64;
    // A small deterministic sequence of range offsets, different per stream.
    let mut seed = 0x243F_6A88_85A3_08D3u64 ^ (i as u64).wrapping_mul(0x9E37_79B9);
    for _ in 0..o.count {
        let t = Instant::now();
        match o.op.as_str() {
            "put" => {
                let h = head(o, "PUT", &key, &[], Some((o.size, p)));
                c.exchange(&h, Some((body, p)), None)?;
                bytes += o.size as u64;
            }
            "get" => {
                let h = head(o, "GET", &key, &[], None);
                c.exchange(&h, None, Some(body))?;
                bytes += o.size as u64;
            }
            "range" => {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = o.range.min(o.size);
                let at = (seed % ((o.size - n) as u64 + 1)) as usize;
                let h = head(
                    o,
                    "GET",
                    &key,
                    &[("range", format!("bytes={at}-{}", at + n - 1))],
                    None,
                );
                c.exchange(&h, None, Some(&body[at..at + n]))?;
                bytes += n as u64;
            }
            "multipart" => {
                let h = head(o, "POST", &format!("{key}?uploads"), &[], None);
                let (_, x) = c.exchange(&h, None, None)?;
                let x = String::from_utf8_lossy(&x).to_string();
                let id = x
                    .split("<UploadId>")
                    .nth(1)
                    .and_then(|s| s.split("</UploadId>").next())
                    .ok_or_else(|| bad(format!("no UploadId in {x}")))?
                    .to_string();
                let mut done = String::from("<CompleteMultipartUpload>");
                for (n, part) in body.chunks(o.part).enumerate() {
                    let pn = n + 1;
                    let path = format!("{key}?partNumber={pn}&uploadId={id}");
                    let pp = Prepared {
                        data: Vec::new(),
                        sha256: if o.auth == "signed" {
                            hex::encode(Sha256::digest(part))
                        } else {
                            String::new()
                        },
                        crc32: if o.auth == "chunked-crc" {
                            crc32_b64(part)
                        } else {
                            String::new()
                        },
                    };
                    let h = head(o, "PUT", &path, &[], Some((part.len(), &pp)));
                    let (rh, _) = c.exchange(&h, Some((part, &pp)), None)?;
                    let etag = rh.get("etag").unwrap_or("").replace('"', "&quot;");
                    done.push_str(&format!(
                        "<Part><PartNumber>{pn}</PartNumber><ETag>{etag}</ETag></Part>"
                    ));
                    bytes += part.len() as u64;
                }
                done.push_str("</CompleteMultipartUpload>");
                let dp = Prepared {
                    data: Vec::new(),
                    sha256: hex::encode(Sha256::digest(done.as_bytes())),
                    crc32: String::new(),
                };
                let signed = Opts {
                    auth: "signed".into(),
                    ..o.clone()
                };
                let h = head(
                    &signed,
                    "POST",
                    &format!("{key}?uploadId={id}"),
                    &[],
                    Some((done.len(), &dp)),
                );
                let (_, x) = c.exchange(&h, Some((done.as_bytes(), &dp)), None)?;
                if std::env::var_os("S3LOAD_DEBUG").is_some() {
                    eprintln!("complete: {}", String::from_utf8_lossy(&x));
                }
                if !String::from_utf8_lossy(&x).contains("CompleteMultipartUploadResult") {
                    return Err(bad(format!("complete: {}", String::from_utf8_lossy(&x))));
                }
            }
            op => return Err(bad(format!("unknown op {op}"))),
        }
        lat.push(t.elapsed().as_secs_f64());
    }
    Ok((bytes, lat))
}

fn crc32_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(b).to_be_bytes())
}

fn cpu_secs() -> f64 {
    // utime + stime of this process, from /proc (Linux; the benchmark runs there).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("s3load: {e}");
            std::process::exit(2);
        }
    };
    let d = data(o.size);
    let p = Arc::new(Prepared {
        sha256: if o.auth == "signed" && o.op == "put" {
            hex::encode(Sha256::digest(&d))
        } else {
            String::new()
        },
        crc32: if o.auth == "chunked-crc" && o.op == "put" {
            crc32_b64(&d)
        } else {
            String::new()
        },
        data: d,
    });
    let cpu0 = cpu_secs();
    let t = Instant::now();
    let handles: Vec<_> = (0..o.streams)
        .map(|i| {
            let (o, p) = (o.clone(), p.clone());
            std::thread::spawn(move || stream(&o, &p, i))
        })
        .collect();
    let mut bytes = 0;
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok((b, l))) => {
                bytes += b;
                lat.extend(l);
            }
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(_) => errors.push("stream thread panicked".into()),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    if !errors.is_empty() {
        eprintln!("s3load: {}", errors.join("; "));
        std::process::exit(1);
    }
    lat.sort_by(f64::total_cmp);
    let q = |f: f64| {
        lat.get(((lat.len() as f64 * f) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
            * 1e3
    };
    println!(
        "{{\"bytes\": {bytes}, \"secs\": {secs:.6}, \"requests\": {}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}, \"cpu_secs\": {cpu:.3}}}",
        lat.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
}
