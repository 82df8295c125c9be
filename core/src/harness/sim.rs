//! The model the property tests (`tests_props.rs`) and the `harness` fuzz target check the
//! filter against: what each key may hold, and one operation at a time run through the
//! harness and checked against both invariants.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::check::{check_read, check_upstream, marked};
use super::drive::{RandomFaults, Splitter};
use super::s3::StoredObject;
use super::*;
use crate::auth::checksum::ChecksumAlgorithm;
use crate::format::ENVELOPE_HEADER;

pub const KEYS: [&str; 3] = ["k0", "dir/k1", "k2"];

#[derive(Clone, Debug)]
pub enum Range {
    FromTo(u32, u32),
    From(u32),
    Suffix(u32),
}

#[derive(Clone, Debug)]
pub enum Tamper {
    Flip(u32),
    Truncate(u32),
    Envelope(u32),
    Restore,
}

#[derive(Clone, Debug)]
pub enum Op {
    Put {
        key: usize,
        len: usize,
        chunked: u8,
    },
    Get {
        key: usize,
        range: Option<Range>,
    },
    Head {
        key: usize,
    },
    Part {
        key: usize,
        n: u32,
    },
    /// `big` parts of 5 MiB and a bit, then a last part of `last` bytes (or 5 MiB).
    Multipart {
        key: usize,
        big: u8,
        last: usize,
        last_big: bool,
    },
    Copy {
        src: usize,
        dst: usize,
        replace: bool,
    },
    PartCopy {
        src: usize,
        dst: usize,
        range: Option<(u32, u32)>,
    },
    Delete {
        key: usize,
    },
    List,
    /// The provider tampers with a stored object, then the client reads it (whole, a
    /// range, or part 1 or 2).
    Tamper {
        key: usize,
        how: Tamper,
        read: u8,
        range: Option<Range>,
    },
    /// A proxy restarts (its shared data and VM state are gone).
    Restart {
        proxy: usize,
    },
}

const MIB: usize = 1 << 20;

/// A response as a client saw it: status, headers (sorted), body, complete.
pub type Seen = (u16, Vec<(String, String)>, Vec<u8>, bool);

/// A version of an object the client may have stored: its plaintext, and its parts'
/// lengths if it is a multipart object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    data: Vec<u8>,
    parts: Option<Vec<usize>>,
}

/// What each key may hold: one version (or absence) when the last write's outcome is
/// known, several when it is not (a write that failed after it may have reached the
/// backend).
pub struct Sim {
    h: Harness,
    model: BTreeMap<usize, Vec<Option<Version>>>,
    /// Keys whose stored bytes the provider changed.
    tampered: HashSet<usize>,
    /// The stored object as written, for the provider to restore.
    backup: HashMap<usize, StoredObject>,
    faults: bool,
    seed: u32,
    /// What the client saw, operation by operation (for comparisons across runs).
    pub seen: Vec<Seen>,
    /// Requests so far (they go to the proxies in turn).
    turn: usize,
}

fn range_header(range: &Option<Range>, len: usize) -> Option<String> {
    let len64 = len as u64;
    match range {
        None => None,
        Some(Range::FromTo(a, b)) => {
            let a = u64::from(*a) % (len64 + 3);
            Some(format!(
                "bytes={a}-{}",
                a + u64::from(*b) % (len64 + 70_000)
            ))
        }
        Some(Range::From(a)) => Some(format!("bytes={}-", u64::from(*a) % (len64 + 3))),
        Some(Range::Suffix(n)) => Some(format!("bytes=-{}", u64::from(*n) % (len64 + 140_000))),
    }
}

impl Sim {
    pub fn new(opts: Options, seed: u64, faults: bool, split: Splitter) -> Sim {
        let redis = opts.redis;
        let mut h = Harness::new(opts.clone(), seed);
        if redis {
            // A second replica: requests go to both in turn, sharing state in Redis.
            h.add_proxy(opts);
        }
        h.world.req_split = split.clone();
        h.world.resp_split = split;
        if faults {
            h.world.random_faults = Some(RandomFaults {
                fail: 0.08,
                delay: 0.1,
                max_delay_ms: 1500,
            });
        }
        Sim {
            h,
            model: BTreeMap::new(),
            tampered: HashSet::new(),
            backup: HashMap::new(),
            faults,
            seed: 0,
            seen: Vec::new(),
            turn: 0,
        }
    }

    fn versions(&self, k: usize) -> Vec<Option<Version>> {
        self.model.get(&k).cloned().unwrap_or_else(|| vec![None])
    }

    /// The key's one known, untampered version (`Some(None)`: known absent).
    fn known(&self, k: usize) -> Option<Option<Version>> {
        let v = self.versions(k);
        (v.len() == 1 && !self.tampered.contains(&k)).then(|| v[0].clone())
    }

    fn send(&mut self, r: Request) -> ClientResponse {
        self.turn += 1;
        let p = self.turn % self.h.proxies.len();
        let r = self.h.send_on(p, r);
        assert!(!r.stuck, "a request never ended: {r:?}");
        let mut hs: Vec<(String, String)> = r.headers.0.clone();
        hs.sort();
        self.seen.push((r.status, hs, r.body.clone(), r.complete()));
        r
    }

    /// A whole GET or HEAD. With several replicas, one that last saw another version of
    /// the key than another replica wrote since is told to retry (503 SlowDown, README
    /// "s3crypt_versions_changed"), as SDKs do; the retry reads the object afresh and
    /// must succeed.
    fn send_whole_read(&mut self, req: Request) -> ClientResponse {
        let r = self.send(req.clone());
        // (A HEAD's 503 has no body to name its code.)
        let slow_down = r.code().is_none_or(|c| c == "SlowDown");
        if self.h.proxies.len() > 1 && r.status == 503 && slow_down {
            return self.send(req);
        }
        r
    }

    /// A write to `k` ended: known as `v` if it succeeded, possibly `v` otherwise.
    fn wrote(&mut self, k: usize, v: Option<Version>, ok: bool, refused: bool) {
        if ok {
            self.model.insert(k, vec![v]);
            self.tampered.remove(&k);
            match self.h.world.s3.object(KEYS[k]) {
                Some(o) => self.backup.insert(k, o.clone()),
                None => self.backup.remove(&k),
            };
        } else if !refused {
            let mut all = self.versions(k);
            if !all.contains(&v) {
                all.push(v);
            }
            self.model.insert(k, all);
            self.backup.remove(&k);
        }
    }

    /// The `k`-th key that the backend holds (any key if it holds none): copies and
    /// tampering act on objects that exist.
    fn pick(&self, k: usize) -> usize {
        let present: Vec<usize> = (0..KEYS.len())
            .filter(|&i| self.h.world.s3.object(KEYS[i]).is_some())
            .collect();
        if present.is_empty() {
            k
        } else {
            present[k % present.len()]
        }
    }

    fn data(&mut self, len: usize) -> Vec<u8> {
        self.seed += 1;
        marked(len, self.seed)
    }

    /// A read of `k` (whole, a range or a part): invariant (b) against every version.
    fn check_read_of(
        &self,
        k: usize,
        r: &ClientResponse,
        win: &dyn Fn(&Version) -> Option<(usize, usize)>,
    ) -> Result<(), String> {
        let versions = self.versions(k);
        let mut errs = Vec::new();
        for v in &versions {
            let verdict = match (v, r.status) {
                (None, 404) => Ok(()),
                (None, s) if (200..300).contains(&s) => {
                    Err("a success for an absent object".to_string())
                }
                (None, _) => Ok(()),
                (Some(v), _) => match win(v) {
                    None if (200..300).contains(&r.status) => Err(format!(
                        "a success ({}) for an unsatisfiable read",
                        r.status
                    )),
                    None => Ok(()),
                    Some(w) => check_read(r, &v.data, w),
                },
            };
            match verdict {
                Ok(()) => return self.check_strict(k, r, win),
                Err(e) => errs.push(e),
            }
        }
        Err(format!("{} matches no version: {errs:?}", KEYS[k]))
    }

    /// Nothing tampered, nothing ambiguous, no faults: the read must succeed as S3 would.
    fn check_strict(
        &self,
        k: usize,
        r: &ClientResponse,
        win: &dyn Fn(&Version) -> Option<(usize, usize)>,
    ) -> Result<(), String> {
        let Some(v) = self.known(k) else {
            return Ok(());
        };
        if self.faults && r.status >= 500 {
            return Ok(());
        }
        let want = match &v {
            None => {
                return (r.status == 404)
                    .then_some(())
                    .ok_or(format!("{} for an absent object", r.status))
            }
            Some(v) => win(v),
        };
        match want {
            None if r.status == 416 => Ok(()),
            None => Err(format!("{} for an unsatisfiable read", r.status)),
            Some(_) if v.as_ref().is_some_and(|v| v.data.is_empty()) => {
                (r.ok() && r.body.is_empty()).then_some(()).ok_or(format!(
                    "an empty object read as {} ({} bytes)",
                    r.status,
                    r.body.len()
                ))
            }
            Some((a, b))
                if r.ok()
                    && v.as_ref()
                        .is_some_and(|v| r.body == v.data[a..=b.min(v.data.len() - 1)]) =>
            {
                Ok(())
            }
            Some(_) => Err(format!(
                "an untampered read failed: {} {:?} ({} bytes)",
                r.status,
                r.code(),
                r.body.len()
            )),
        }
    }

    pub fn run(&mut self, op: &Op) -> Result<(), String> {
        let from = self.h.mark();
        match op.clone() {
            Op::Put { key, len, chunked } => {
                let data = self.data(len);
                let mut r = Request::put(&obj(KEYS[key]), &data);
                r = match chunked {
                    1 => r.chunked(Chunked::Signed, 7000 + len / 3),
                    2 => r.chunked(Chunked::UnsignedTrailer(ChecksumAlgorithm::Crc32), 65_536),
                    3 => r.header(
                        "content-md5",
                        &B64.encode(<md5::Md5 as md5::Digest>::digest(&data)),
                    ),
                    _ => r,
                };
                let resp = self.send(r);
                let v = Version { data, parts: None };
                self.wrote(key, Some(v), resp.ok(), (400..500).contains(&resp.status));
                if !resp.ok() {
                    return Err(format!("a PUT failed: {} {}", resp.status, resp.text()));
                }
            }
            Op::Get { key, range } => {
                // The range is drawn against the longest version; each version resolves it.
                let len = self
                    .versions(key)
                    .iter()
                    .flatten()
                    .map(|v| v.data.len())
                    .max()
                    .unwrap_or(0);
                let hdr = range_header(&range, len);
                let mut req = Request::get(&obj(KEYS[key]));
                if let Some(h) = &hdr {
                    req = req.header("range", h);
                }
                let r = if hdr.is_none() {
                    self.send_whole_read(req)
                } else {
                    self.send(req)
                };
                self.check_read_of(key, &r, &move |v: &Version| match &hdr {
                    None => Some((0, v.data.len().saturating_sub(1))),
                    Some(h) => parse_window(h, v.data.len()),
                })?;
            }
            Op::Head { key } => {
                let r = self.send_whole_read(Request::new("HEAD", &obj(KEYS[key])));
                if let Some(v) = self.known(key) {
                    let want = v.map(|v| v.data.len().to_string());
                    let got = (r.status == 200)
                        .then(|| r.header("content-length").unwrap_or("").to_string());
                    if got != want && !(self.faults && r.status >= 500) {
                        return Err(format!("HEAD: {got:?}, stored {want:?}"));
                    }
                }
            }
            Op::Part { key, n } => {
                let r = self.send(Request::get(&format!("{}?partNumber={n}", obj(KEYS[key]))));
                self.check_read_of(key, &r, &move |v: &Version| match &v.parts {
                    // A single object is its own part 1, an empty one too (as S3 answers).
                    None if n == 1 => Some((0, v.data.len().saturating_sub(1))),
                    None => None,
                    Some(p) if (n as usize) <= p.len() => {
                        let at: usize = p[..n as usize - 1].iter().sum();
                        Some((at, at + p[n as usize - 1] - 1))
                    }
                    Some(_) => None,
                })?;
            }
            Op::Multipart {
                key,
                big,
                last,
                last_big,
            } => self.multipart(key, big, last, last_big)?,
            Op::Copy { src, dst, replace } => {
                let src = self.pick(src);
                let mut r = Request::new("PUT", &obj(KEYS[dst]))
                    .header("x-amz-copy-source", &format!("/{BUCKET}/{}", KEYS[src]));
                if replace {
                    r = r
                        .header("x-amz-metadata-directive", "REPLACE")
                        .header("x-amz-meta-r", "1");
                }
                let resp = self.send(r);
                let ok = resp.ok();
                let srcs = self.versions(src);
                let tampered = self.tampered.contains(&src);
                if ok {
                    self.model.insert(dst, srcs.clone());
                    if tampered || srcs.len() > 1 {
                        self.tampered.insert(dst);
                        self.backup.remove(&dst);
                    } else {
                        self.wrote(dst, srcs[0].clone(), true, false);
                    }
                } else {
                    let refused = (400..500).contains(&resp.status) && resp.status != 412;
                    for v in srcs {
                        self.wrote(dst, v, false, refused);
                    }
                    if let Some(Some(_)) = self.known(src) {
                        if !self.faults && (replace || src != dst) {
                            return Err(format!(
                                "a copy of an untampered object failed: {} {}",
                                resp.status,
                                resp.text()
                            ));
                        }
                    }
                }
            }
            Op::PartCopy { src, dst, range } => self.part_copy(src, dst, range)?,
            Op::Delete { key } => {
                let r = self.send(Request::new("DELETE", &obj(KEYS[key])));
                self.wrote(key, None, r.status == 204, false);
            }
            Op::List => {
                // Page by page, as clients list (the filter may cut a page short).
                let mut listed: BTreeMap<String, u64> = BTreeMap::new();
                let mut token: Option<String> = None;
                let mut whole = false;
                for _ in 0..=KEYS.len() {
                    let path = match &token {
                        None => format!("/{BUCKET}?list-type=2"),
                        Some(t) => format!(
                            "/{BUCKET}?continuation-token={}&list-type=2",
                            crate::s3::uri_encode(t, true)
                        ),
                    };
                    let r = self.send(Request::get(&path));
                    if !r.ok() {
                        break;
                    }
                    let text = r.text();
                    for (k, s, _) in s3_xml::entries(&text) {
                        if listed.insert(k.clone(), s).is_some() {
                            return Err(format!("{k} listed twice"));
                        }
                    }
                    token = crate::s3::xml::element_text(&text, "NextContinuationToken");
                    if crate::s3::xml::element_text(&text, "IsTruncated").as_deref() != Some("true")
                    {
                        whole = true;
                        break;
                    }
                }
                if whole {
                    for (i, k) in KEYS.iter().enumerate() {
                        match self.known(i) {
                            Some(Some(v)) if listed.get(*k) != Some(&(v.data.len() as u64)) => {
                                return Err(format!(
                                    "listed {k} as {:?}, stored {}",
                                    listed.get(*k),
                                    v.data.len()
                                ))
                            }
                            Some(None) if listed.contains_key(*k) => {
                                return Err(format!("listed deleted {k}"))
                            }
                            _ => {}
                        }
                    }
                }
            }
            Op::Restart { proxy } => self.h.restart(proxy % self.h.proxies.len()),
            Op::Tamper {
                key,
                how,
                read,
                range,
            } => {
                let key = self.pick(key);
                self.tamper(key, how);
                let then = match read {
                    0 => Op::Get { key, range: None },
                    1 => Op::Get { key, range },
                    n => Op::Part {
                        key,
                        n: u32::from(n) - 1,
                    },
                };
                self.run(&then)?;
            }
        }
        check_upstream(&self.h, from)?;
        if !self.h.world.anomalies.is_empty() {
            return Err(format!("driver anomalies: {:?}", self.h.world.anomalies));
        }
        Ok(())
    }

    fn multipart(
        &mut self,
        key: usize,
        big: u8,
        last: usize,
        last_big: bool,
    ) -> Result<(), String> {
        let mut lens: Vec<usize> = (0..big)
            .map(|i| 5 * MIB + (last * (i as usize + 1)) % 977)
            .collect();
        lens.push(if last_big && big > 0 { 5 * MIB } else { last });
        let parts: Vec<Vec<u8>> = lens.iter().map(|&l| self.data(l)).collect();
        let k = KEYS[key];
        let c = self.send(Request::new("POST", &format!("{}?uploads", obj(k))));
        let Some(id) = c.xml("UploadId").filter(|_| c.ok()) else {
            return self.expect_fault("create", &c);
        };
        let mut etags = Vec::new();
        for (n, p) in (1u32..).zip(&parts) {
            let r = self.send(Request::put(&part_path(k, &id, n), p));
            match r.header("etag").filter(|_| r.ok()) {
                Some(e) => etags.push((n, e.to_string())),
                None => {
                    self.send(Request::new(
                        "DELETE",
                        &format!("{}?uploadId={}", obj(k), enc(&id)),
                    ));
                    return self.expect_fault("part", &r);
                }
            }
        }
        let r = self.send(Request::post(
            &format!("{}?uploadId={}", obj(k), enc(&id)),
            complete_body(&etags).as_bytes(),
        ));
        let v = Version {
            data: parts.concat(),
            parts: Some(lens),
        };
        self.wrote(key, Some(v), r.ok() && r.xml("ETag").is_some(), false);
        if !r.ok() {
            self.send(Request::new(
                "DELETE",
                &format!("{}?uploadId={}", obj(k), enc(&id)),
            ));
            return self.expect_fault("complete", &r);
        }
        Ok(())
    }

    fn part_copy(
        &mut self,
        src: usize,
        dst: usize,
        range: Option<(u32, u32)>,
    ) -> Result<(), String> {
        let src = self.pick(src);
        let (s, d) = (KEYS[src], KEYS[dst]);
        let c = self.send(Request::new("POST", &format!("{}?uploads", obj(d))));
        let Some(id) = c.xml("UploadId").filter(|_| c.ok()) else {
            return self.expect_fault("create", &c);
        };
        let len = self
            .versions(src)
            .iter()
            .flatten()
            .map(|v| v.data.len())
            .max()
            .unwrap_or(0);
        let span = range.map(|(a, n)| {
            let a = a as usize % (len + 2);
            (a, a + n as usize % 300_000)
        });
        let mut req = Request::new("PUT", &part_path(d, &id, 1))
            .header("x-amz-copy-source", &format!("/{BUCKET}/{s}"));
        if let Some((a, b)) = span {
            req = req.header("x-amz-copy-source-range", &format!("bytes={a}-{b}"));
        }
        let r = self.send(req);
        let copied: Vec<Option<Version>> = self
            .versions(src)
            .into_iter()
            .map(|v| {
                let v = v?;
                let (a, b) = span.unwrap_or((0, v.data.len().wrapping_sub(1)));
                (b < v.data.len() && a <= b).then(|| Version {
                    data: v.data[a..=b].to_vec(),
                    parts: Some(vec![b - a + 1]),
                })
            })
            .collect();
        let Some(etag) = r.xml("ETag").filter(|_| r.ok()) else {
            self.send(Request::new(
                "DELETE",
                &format!("{}?uploadId={}", obj(d), enc(&id)),
            ));
            // A copy of a known, untampered, copyable range must work.
            if let (Some(Some(_)), [Some(_)]) = (self.known(src), copied.as_slice()) {
                return self.expect_fault("part copy", &r);
            }
            return Ok(());
        };
        let done = self.send(Request::post(
            &format!("{}?uploadId={}", obj(d), enc(&id)),
            complete_body(&[(1, etag)]).as_bytes(),
        ));
        // What was copied was verified: the destination holds true bytes of a version.
        let ok = done.ok();
        if ok && copied.len() == 1 {
            self.wrote(dst, copied[0].clone(), true, false);
        } else {
            for v in copied {
                self.wrote(dst, v, false, !ok && done.status == 400);
            }
            if ok {
                self.backup.remove(&dst);
            }
        }
        if !ok {
            self.send(Request::new(
                "DELETE",
                &format!("{}?uploadId={}", obj(d), enc(&id)),
            ));
            return self.expect_fault("complete", &done);
        }
        Ok(())
    }

    /// A failure that only a fault may explain.
    fn expect_fault(&self, what: &str, r: &ClientResponse) -> Result<(), String> {
        if self.faults && (r.status >= 500 || r.reset || r.status == 404) {
            return Ok(());
        }
        Err(format!(
            "{what} failed without a fault: {} {}",
            r.status,
            r.text()
        ))
    }

    fn tamper(&mut self, key: usize, how: Tamper) {
        let k = KEYS[key];
        let Some(o) = self.h.world.s3.object_mut(k) else {
            return;
        };
        let len = o.data.len();
        match how {
            Tamper::Flip(at) if len > 0 => o.data[at as usize % len] ^= 1 << (at % 8),
            Tamper::Truncate(at) if len > 0 => o.data.truncate(at as usize % len),
            Tamper::Envelope(at) => {
                let Some(i) = o.meta.iter().position(|(n, _)| n == ENVELOPE_HEADER) else {
                    return;
                };
                let mut e = o.meta[i].1.clone().into_bytes();
                let j = e.len() - 1 - at as usize % 40;
                e[j] = if e[j] == b'A' { b'B' } else { b'A' };
                o.meta[i].1 = String::from_utf8_lossy(&e).into_owned();
            }
            Tamper::Restore => {
                if let Some(b) = self.backup.get(&key) {
                    *o = b.clone();
                    self.tampered.remove(&key);
                }
                return;
            }
            _ => return,
        }
        self.tampered.insert(key);
    }
}

/// The window of a `Range` header value in an object of `len` bytes, as S3 resolves it.
fn parse_window(h: &str, len: usize) -> Option<(usize, usize)> {
    let spec = s3::parse_range(h)?;
    s3::resolve(spec, len as u64).map(|(a, b)| (a as usize, b as usize))
}
