//! HTTP/1.1 plumbing shared by `s3sink` and `s3load`: just enough of the protocol for S3
//! requests and responses over keep-alive connections, with bodies framed by
//! `Content-Length`, `Transfer-Encoding: chunked` or aws-chunked (as the filter sends
//! object data upstream). Blocking std I/O, one thread per connection: each stream of
//! the benchmark is one thread on each side, so neither tool multiplexes anything.

use std::io::{self, BufRead, Read, Write};

/// A request or response head: the first line and the headers (names lowercased).
#[derive(Debug, Default, Clone)]
pub struct Head {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn content_length(&self) -> io::Result<Option<u64>> {
        match self.get("content-length") {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("content-length {v:?}"))),
        }
    }
    pub fn chunked(&self) -> bool {
        self.get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
    /// The connection is to be closed after this message.
    pub fn close(&self) -> bool {
        self.get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Buffers of replaced objects, reused for the next bodies: a benchmark overwrites the
/// same keys again and again, and faulting in fresh pages for every 256 MiB body would
/// make the sink slower than the proxy it is there to measure.
pub mod pool {
    use std::sync::Mutex;

    static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    const MAX_BYTES: usize = 8 << 30;

    /// An empty buffer with at least `cap` bytes of capacity.
    pub fn take(cap: usize) -> Vec<u8> {
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        match free.iter().position(|v| v.capacity() >= cap) {
            Some(i) => free.swap_remove(i),
            None => Vec::with_capacity(cap),
        }
    }

    /// Gives a buffer back (small ones are simply freed).
    pub fn give(mut v: Vec<u8>) {
        if v.capacity() < 1 << 20 {
            return;
        }
        v.clear();
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        if free.iter().map(Vec::capacity).sum::<usize>() + v.capacity() <= MAX_BYTES {
            free.push(v);
        }
    }
}

pub fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

const MAX_HEAD: usize = 64 * 1024;

/// Reads one line ending in CRLF (without it); `None` at a clean end of stream.
fn line(r: &mut impl BufRead, limit: usize) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(limit as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\r\n") {
        return Err(bad("line without CRLF or too long"));
    }
    buf.truncate(buf.len() - 2);
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| bad("non-UTF-8 head"))
}

/// Reads a message head; `None` when the peer closed the connection between messages.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let Some(first) = line(r, MAX_HEAD)? else {
        return Ok(None);
    };
    let mut head = Head {
        line: first,
        headers: Vec::new(),
    };
    let mut total = head.line.len();
    loop {
        let l = line(r, MAX_HEAD)?.ok_or_else(|| bad("end of stream in head"))?;
        if l.is_empty() {
            return Ok(Some(head));
        }
        total += l.len();
        if total > MAX_HEAD {
            return Err(bad("head too large"));
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| bad("header without colon"))?;
        head.headers
            .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
}

/// Where a body's bytes go: kept (`Some`) or only counted.
pub fn read_body(r: &mut impl BufRead, head: &Head, keep: bool) -> io::Result<(u64, Vec<u8>)> {
    let aws_chunked = head
        .get("x-amz-content-sha256")
        .is_some_and(|v| v.starts_with("STREAMING-"));
    let mut out = Vec::new();
    if keep {
        let hint = head
            .get("x-amz-decoded-content-length")
            .or(head.get("content-length"))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        out = pool::take(hint.min(1 << 30));
    }
    let n = if head.chunked() {
        // Transfer-Encoding: chunked, possibly around aws-chunked framing: decode the
        // outer framing into a buffer first only when the inner one needs decoding too.
        if aws_chunked {
            let mut raw = Vec::new();
            http_chunked(r, &mut Sink::Keep(&mut raw))?;
            aws_chunked_decode(&mut io::Cursor::new(raw), &mut Sink::of(keep, &mut out))?
        } else {
            http_chunked(r, &mut Sink::of(keep, &mut out))?
        }
    } else {
        let len = head.content_length()?.unwrap_or(0);
        let mut body = r.by_ref().take(len);
        let n = if aws_chunked {
            aws_chunked_decode(&mut body, &mut Sink::of(keep, &mut out))?
        } else {
            copy_exact(&mut body, len, &mut Sink::of(keep, &mut out))?
        };
        if body.limit() != 0 {
            return Err(bad("body shorter than content-length"));
        }
        n
    };
    Ok((n, out))
}

enum Sink<'a> {
    Keep(&'a mut Vec<u8>),
    Count,
}

impl<'a> Sink<'a> {
    fn of(keep: bool, v: &'a mut Vec<u8>) -> Sink<'a> {
        if keep {
            Sink::Keep(v)
        } else {
            Sink::Count
        }
    }
    fn put(&mut self, b: &[u8]) {
        if let Sink::Keep(v) = self {
            v.extend_from_slice(b);
        }
    }
}

fn copy_to(r: &mut impl Read, out: &mut Sink) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.put(&buf[..k]);
        n += k as u64;
    }
}

fn copy_exact(r: &mut impl Read, len: u64, out: &mut Sink) -> io::Result<u64> {
    let mut t = r.take(len);
    let n = match out {
        // Straight into the object's buffer: one copy from the socket, no zeroing.
        Sink::Keep(v) => t.read_to_end(v)? as u64,
        Sink::Count => copy_to(&mut t, out)?,
    };
    if n != len {
        return Err(bad("truncated chunk"));
    }
    Ok(n)
}

fn chunk_size(l: &str) -> io::Result<u64> {
    let hex = l.split(';').next().unwrap_or("").trim();
    u64::from_str_radix(hex, 16).map_err(|_| bad(format!("chunk size {l:?}")))
}

fn crlf(r: &mut impl BufRead) -> io::Result<()> {
    match line(r, 2)? {
        Some(l) if l.is_empty() => Ok(()),
        _ => Err(bad("chunk not followed by CRLF")),
    }
}

fn http_chunked(r: &mut impl BufRead, out: &mut Sink) -> io::Result<u64> {
    chunks(r, out, false)
}

/// aws-chunked: `hex[;chunk-signature=…]` CRLF data CRLF …, a zero chunk, trailers, CRLF.
/// Signatures are not checked: the sink stands in for a backend that the filter signs for,
/// and the e2e tests against RGW are where those signatures are verified.
fn aws_chunked_decode(r: &mut impl BufRead, out: &mut Sink) -> io::Result<u64> {
    chunks(r, out, true)
}

/// Chunked framing (HTTP's or aws-chunked, which share the chunk syntax): the data, then
/// the trailer lines up to an empty one (`open_end`: or the end of the body, as aws-chunked
/// bodies inside a Content-Length may end).
fn chunks(r: &mut impl BufRead, out: &mut Sink, open_end: bool) -> io::Result<u64> {
    let mut n = 0;
    loop {
        let l = line(r, 4096)?.ok_or_else(|| bad("end of stream in chunked body"))?;
        let size = chunk_size(&l)?;
        if size == 0 {
            loop {
                match line(r, MAX_HEAD)? {
                    Some(t) if t.is_empty() => return Ok(n),
                    Some(_) => {}
                    None if open_end => return Ok(n),
                    None => return Err(bad("end in trailers")),
                }
            }
        }
        n += copy_exact(r, size, out)?;
        crlf(r)?;
    }
}

/// Writes a head (`line` then headers) and the empty line.
pub fn write_head(w: &mut impl Write, line: &str, headers: &[(&str, String)]) -> io::Result<()> {
    let mut s = String::with_capacity(256);
    s.push_str(line);
    s.push_str("\r\n");
    for (k, v) in headers {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    w.write_all(s.as_bytes())
}

/// An RFC 7231 date.
pub fn http_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let amz = s3crypt_core::auth::sigv4::amz_date(unix); // YYYYMMDDTHHMMSSZ
    let day = DAYS[unix.div_euclid(86_400).rem_euclid(7) as usize];
    let month = MONTHS[amz[4..6].parse::<usize>().unwrap_or(1).clamp(1, 12) - 1];
    format!(
        "{day}, {} {month} {} {}:{}:{} GMT",
        &amz[6..8],
        &amz[..4],
        &amz[9..11],
        &amz[11..13],
        &amz[13..15]
    )
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_796_212_800), "Wed, 02 Dec 2026 12:00:00 GMT");
    }

    fn decode(head: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let h = Head {
            line: "PUT / HTTP/1.1".into(),
            headers: head
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        read_body(&mut io::Cursor::new(body.to_vec()), &h, true)
            .unwrap()
            .1
    }

    #[test]
    fn bodies() {
        assert_eq!(decode(&[("content-length", "3")], b"abcdef"), b"abc");
        let aws = b"3;chunk-signature=00\r\nabc\r\n2;chunk-signature=11\r\nde\r\n0;chunk-signature=22\r\nx-amz-checksum-crc32:AAAA\r\n\r\n";
        let n = aws.len().to_string();
        assert_eq!(
            decode(
                &[
                    ("content-length", &n),
                    ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
                ],
                aws
            ),
            b"abcde"
        );
        assert_eq!(
            decode(
                &[("transfer-encoding", "chunked")],
                b"3\r\nabc\r\n0\r\n\r\n"
            ),
            b"abc"
        );
        let h = Head {
            line: String::new(),
            headers: vec![("content-length".into(), "9".into())],
        };
        assert!(read_body(&mut io::Cursor::new(b"abc".to_vec()), &h, true).is_err());
    }
}
