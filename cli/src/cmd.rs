//! `decrypt`, `verify` and `inspect`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use s3crypt_core::format::part_table::{PartTable, Walk};
use s3crypt_core::format::{
    has_trailer, open_trailer, FormatError, ENVELOPE_HEADER, PART_OVERHEAD, TRAILER_LEN,
};
use s3crypt_core::headers::Headers;
use s3crypt_core::predecessor::{self, manifest_key, MAX_MANIFEST_BODY};

use crate::keys::Keys;
use crate::object::{classify, headers_from_json, read_all, read_into, Kind, Stored};
use crate::run::{for_each, Outcome};
use crate::s3::{Backend, Listed};
use crate::{parse_location, Args, Fail, FailKind};

/// A stored object opened for reading: what is known of it and its stored bytes.
pub struct Opened {
    pub stored: Stored,
    pub body: Box<dyn Read + Send>,
}

fn content_length(h: &Headers) -> Result<u64, Fail> {
    h.get("content-length")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Fail::backend("no Content-Length".into()))
}

/// Opens `bucket/key` at the backend (and the predecessor's manifest of it, if the object
/// has no s3crypt envelope and a predecessor key is configured).
pub fn open_s3(b: &Backend, bucket: &str, key: &str, keys: &Keys) -> Result<Opened, Fail> {
    let r = b.get(bucket, key, None)?;
    let len = content_length(&r.headers)?;
    let manifest = if r.headers.get(ENVELOPE_HEADER).is_none() && keys.predecessor().is_some() {
        b.get_if_exists(bucket, &manifest_key(key), MAX_MANIFEST_BODY as u64)?
    } else {
        None
    };
    let headers = r.headers.clone();
    Ok(Opened {
        stored: Stored {
            headers,
            len,
            manifest,
        },
        body: r.into_reader(),
    })
}

/// Opens a raw object: its stored bytes, the JSON of its HEAD and, for the predecessor's
/// multipart objects, its manifest.
pub fn open_file(path: &str, meta: &str, manifest: Option<&str>) -> Result<Opened, Fail> {
    let f =
        std::fs::File::open(path).map_err(|e| Fail::usage(format!("cannot open {path}: {e}")))?;
    let len = f.metadata().map_err(Fail::io)?.len();
    let text = std::fs::read_to_string(meta)
        .map_err(|e| Fail::usage(format!("cannot read {meta}: {e}")))?;
    let headers = headers_from_json(&text)?;
    if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        if n != len {
            return Err(Fail::new(
                FailKind::Length,
                format!("{path} holds {len} bytes, its metadata says {n}"),
            ));
        }
    }
    let manifest = match manifest {
        Some(m) => Some(read_all(
            std::fs::File::open(m).map_err(|e| Fail::usage(format!("cannot open {m}: {e}")))?,
            MAX_MANIFEST_BODY as u64,
        )?),
        None => None,
    };
    Ok(Opened {
        stored: Stored {
            headers,
            len,
            manifest,
        },
        body: Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
    })
}

/// The object an invocation names: `s3://bucket/key`, or `--file` with `--meta`.
fn open_named(args: &Args, keys: &Keys) -> Result<(String, Opened, Option<Backend>), Fail> {
    if let Some(path) = args.get("--file") {
        let meta = args
            .get("--meta")
            .ok_or_else(|| Fail::usage("--file needs --meta HEAD.json".into()))?;
        return Ok((
            path.to_string(),
            open_file(path, meta, args.get("--manifest"))?,
            None,
        ));
    }
    let loc = args
        .pos
        .get(1)
        .ok_or_else(|| Fail::usage("which object? s3://BUCKET/KEY or --file".into()))?;
    let (bucket, key) = parse_location(loc)?;
    if key.is_empty() {
        return Err(Fail::usage(format!("{loc} names no key")));
    }
    let b = args.backend()?;
    let o = open_s3(&b, &bucket, &key, keys)?;
    Ok((loc.clone(), o, Some(b)))
}

/// Writes to `path` through a temporary file beside it, renamed into place only once the
/// whole object verified (removed otherwise; mode 600), or to stdout (`None`, `-`).
pub fn with_output<T>(
    path: Option<&str>,
    f: impl FnOnce(&mut dyn Write) -> Result<T, Fail>,
) -> Result<T, Fail> {
    match path {
        None | Some("-") => {
            let out = std::io::stdout();
            let mut lock = out.lock();
            f(&mut lock)
        }
        Some(p) => {
            let dest = PathBuf::from(p);
            let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("out");
            let tmp =
                dest.with_file_name(format!(".{name}.s3crypt-partial-{}", std::process::id()));
            // Plaintext: readable by its owner only (as the keys that decrypt it), and a
            // fresh file (an existing one at the temporary name is not reused).
            let file = {
                use std::os::unix::fs::OpenOptionsExt as _;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
            }
            .map_err(|e| Fail::usage(format!("cannot write {}: {e}", tmp.display())))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let r = f(&mut w).and_then(|t| {
                let file = w.into_inner().map_err(|e| Fail::io(e.into_error()))?;
                file.sync_all().map_err(Fail::io)?;
                std::fs::rename(&tmp, &dest).map_err(Fail::io)?;
                Ok(t)
            });
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            r
        }
    }
}

pub fn decrypt(args: &Args) -> Result<bool, Fail> {
    let keys = args.keys()?;
    let (name, mut o, _) = open_named(args, &keys)?;
    let kind = classify(&o.stored, &keys)?;
    if matches!(kind, Kind::Plain) {
        return Err(Fail::new(
            FailKind::Unencrypted,
            format!("{name} has no s3crypt envelope (and is not the predecessor's)"),
        ));
    }
    let r = with_output(args.output(), |w| {
        read_into(&kind, o.stored.len, &mut o.body, w)
    })?;
    eprintln!(
        "s3crypt: {name}: {} ({}), {} bytes verified",
        kind.name(),
        hex::encode(r.md5),
        r.plain_len
    );
    Ok(true)
}

/// Reads one object through verification; the outcome for verify's report.
/// `only_predecessor`: objects that are not the predecessor's are skipped unread.
pub fn verify_one(
    b: &Backend,
    bucket: &str,
    key: &str,
    keys: &Keys,
    allow_plain: bool,
    only_predecessor: bool,
) -> Outcome {
    let r = open_s3(b, bucket, key, keys).and_then(|mut o| {
        if only_predecessor && o.stored.headers.get(ENVELOPE_HEADER).is_some() {
            return Ok(Err(("skipped", "an s3crypt object")));
        }
        let kind = classify(&o.stored, keys)?;
        if only_predecessor && !matches!(kind, Kind::Predecessor { .. }) {
            // Counted apart: the filter refuses to serve it once the proxy is replaced.
            return Ok(Err((
                "plaintext",
                "no envelope, not encrypted by the predecessor",
            )));
        }
        if matches!(kind, Kind::Plain) && !allow_plain {
            return Err(Fail::new(FailKind::Unencrypted, "no s3crypt envelope"));
        }
        let r = read_into(&kind, o.stored.len, &mut o.body, &mut std::io::sink())?;
        Ok(Ok((kind, r)))
    });
    match r {
        Ok(Err((result, why))) => Outcome::ok(result, 0, why),
        Ok(Ok((Kind::Plain, r))) => Outcome::ok("plaintext (allowed)", r.plain_len, "plaintext"),
        Ok(Ok((k, r))) => Outcome::ok("verified", r.plain_len, k.name()),
        Err(f) => Outcome::failed(f),
    }
}

/// Every object under `prefix` but the predecessor's internal ones.
pub fn list_objects(b: &Backend, bucket: &str, prefix: &str) -> Result<(Vec<Listed>, usize), Fail> {
    let mut items = Vec::new();
    let mut internal = 0usize;
    b.list(bucket, prefix, &mut |l| {
        if predecessor::is_internal(&l.key) {
            internal += 1;
        } else {
            items.push(l);
        }
    })?;
    Ok((items, internal))
}

pub fn verify(args: &Args) -> Result<bool, Fail> {
    let keys = args.keys()?;
    if args.get("--file").is_some() {
        let (name, mut o, _) = open_named(args, &keys)?;
        let kind = classify(&o.stored, &keys)?;
        if matches!(kind, Kind::Plain) && !args.flag("--allow-plaintext") {
            return Err(Fail::new(
                FailKind::Unencrypted,
                format!("{name} has no s3crypt envelope"),
            ));
        }
        let r = read_into(&kind, o.stored.len, &mut o.body, &mut std::io::sink())?;
        println!(
            "{name}: verified, {}, {} bytes of plaintext",
            kind.name(),
            r.plain_len
        );
        return Ok(true);
    }
    let loc = args
        .pos
        .get(1)
        .ok_or_else(|| Fail::usage("verify what? s3://BUCKET[/PREFIX]".into()))?;
    let (bucket, prefix) = parse_location(loc)?;
    let jobs = args.jobs()?;
    let b = args.backend()?;
    let (items, internal) = list_objects(&b, &bucket, &prefix)?;
    if internal > 0 {
        eprintln!("s3crypt: {internal} internal objects of the predecessor (.s3proxy-internal/) are not objects of their own: skipped");
    }
    let allow = args.flag("--allow-plaintext");
    for_each("verify", items, jobs, args.get("--report"), &|l| {
        verify_one(&b, &bucket, &l.key, &keys, allow, false)
    })
}

/// Ranged reads of stored bytes (for part tables).
pub trait Ranges {
    fn range(&mut self, first: u64, last: u64) -> Result<Vec<u8>, Fail>;
}

pub struct S3Ranges<'a> {
    pub b: &'a Backend,
    pub bucket: &'a str,
    pub key: &'a str,
    /// The ETag of the version read (each read is pinned to it).
    pub etag: &'a str,
}

impl Ranges for S3Ranges<'_> {
    fn range(&mut self, first: u64, last: u64) -> Result<Vec<u8>, Fail> {
        let mut h = Headers::new();
        h.set("range", format!("bytes={first}-{last}"));
        h.set("if-match", self.etag);
        let r = self.b.ok(
            "GET",
            &crate::s3::object_path(self.bucket, self.key),
            &[],
            h,
            crate::s3::Body::Empty,
        )?;
        if r.status != 206 {
            return Err(Fail::backend("the backend ignored a range".into()));
        }
        r.bytes(last - first + 1)
    }
}

struct FileRanges(std::fs::File);

impl Ranges for FileRanges {
    fn range(&mut self, first: u64, last: u64) -> Result<Vec<u8>, Fail> {
        self.0.seek(SeekFrom::Start(first)).map_err(Fail::io)?;
        read_all((&mut self.0).take(last - first + 1), last - first + 1)
    }
}

/// The part table of a multipart s3crypt object, read as the filter reads it: the sealed
/// table at its end if there is one, else part header after part header, each
/// authenticated by the last frame of the part before it.
pub fn part_table(kind: &Kind, stored: u64, src: &mut dyn Ranges) -> Result<PartTable, Fail> {
    let Kind::S3crypt {
        env,
        dek,
        parts: Some(n),
    } = kind
    else {
        return Err(Fail::usage("not a multipart s3crypt object".into()));
    };
    let bad = |e: FormatError| Fail::new(FailKind::Integrity, format!("the part table: {e:?}"));
    let mut walk = Walk::new(env.suite, dek, stored, *n, env.version >= 2);
    if let Some((a, z)) = walk.end_read() {
        let bytes = src.range(a, z)?;
        if let Some(t) = walk.try_end(&bytes) {
            return Ok(t);
        }
    }
    for _ in 0..=10_001 {
        let (a, z) = walk.next_read();
        let bytes = if z < a { Vec::new() } else { src.range(a, z)? };
        if let Some(t) = walk.push(&bytes).map_err(bad)? {
            return Ok(t);
        }
    }
    Err(bad(FormatError::Integrity))
}

pub fn inspect(args: &Args) -> Result<bool, Fail> {
    let keys = args.keys()?;
    let (name, o, b) = open_named(args, &keys)?;
    let kind = classify(&o.stored, &keys)?;
    let stored = o.stored.len;
    drop(o.body);
    let etag = o.stored.headers.get("etag").unwrap_or("").to_string();
    let mut j = serde_json::json!({
        "object": name,
        "format": kind.name(),
        "stored_size": stored,
        "backend_etag": etag,
    });
    match &kind {
        Kind::S3crypt { env, parts, .. } => {
            j["envelope_version"] = env.version.into();
            j["suite"] = env.suite.name().into();
            j["key_id"] = env.key_id.clone().into();
            j["plaintext_size"] = kind.plain_len(stored)?.into();
            j["sealed_md5"] = env.md5.map(hex::encode).into();
            j["sealed_checksum"] = env.checksum.as_ref().map(|c| c.header.clone()).into();
            let location = match &b {
                Some(_) => Some(parse_location(&name)?),
                None => None,
            };
            let mut src: Box<dyn Ranges + '_> = match (&b, &location, args.get("--file")) {
                (Some(b), Some((bucket, key)), _) => Box::new(S3Ranges {
                    b,
                    bucket,
                    key,
                    etag: &etag,
                }),
                (None, _, Some(path)) => {
                    Box::new(FileRanges(std::fs::File::open(path).map_err(Fail::io)?))
                }
                _ => return Err(Fail::usage("no source".into())),
            };
            let plain = kind.plain_len(stored)?;
            if parts.is_none() && has_trailer(env.version, plain) {
                // Version 3: the MD5 (the client's ETag) and a trailing checksum are sealed
                // in the trailer after the last frame.
                let first = stored.checked_sub(TRAILER_LEN).ok_or_else(|| {
                    Fail::new(
                        FailKind::Length,
                        "the stored size is too small for a trailer",
                    )
                })?;
                let bytes = src.range(first, stored.saturating_sub(1))?;
                let Kind::S3crypt { dek, .. } = &kind else {
                    return Err(Fail::usage("not an s3crypt object".into()));
                };
                let t = open_trailer(env.suite, dek, plain, &bytes)
                    .map_err(|_| Fail::new(FailKind::Integrity, "the trailer does not verify"))?;
                j["sealed_md5"] = hex::encode(t.md5).into();
                j["sealed_checksum"] = t
                    .checksum
                    .map(|c| c.header)
                    .or(env.checksum.as_ref().map(|c| c.header.clone()))
                    .into();
            }
            if parts.is_none() {
                j["client_etag"] = j["sealed_md5"].as_str().map(|m| format!("\"{m}\"")).into();
            }
            if parts.is_some() {
                let t = part_table(&kind, stored, src.as_mut())?;
                j["parts"] = t
                    .stored_parts()
                    .iter()
                    .map(|(n, len, off)| serde_json::json!({"number": n, "stored_offset": off, "stored_size": len, "plaintext_size": len.saturating_sub(PART_OVERHEAD)}))
                    .collect::<Vec<_>>()
                    .into();
                j["client_etag"] = t.visible_etag().into();
            }
        }
        Kind::Predecessor {
            segments, manifest, ..
        } => {
            j["suite"] = "AES-256-GCM (predecessor segments)".into();
            j["plaintext_size"] = kind.plain_len(stored)?.into();
            j["segments"] = segments.len().into();
            if let Some(m) = manifest {
                j["parts"] = m
                    .parts
                    .iter()
                    .map(|(n, ps)| serde_json::json!({"number": n, "plaintext_size": ps}))
                    .collect::<Vec<_>>()
                    .into();
            }
        }
        Kind::Plain => {}
    }
    if args.flag("--json") {
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    } else if let Some(m) = j.as_object() {
        for (k, v) in m {
            match v {
                serde_json::Value::Array(a) => {
                    println!("{k}:");
                    for x in a {
                        println!("  {x}");
                    }
                }
                serde_json::Value::String(s) => println!("{k}: {s}"),
                other => println!("{k}: {other}"),
            }
        }
    }
    Ok(true)
}
