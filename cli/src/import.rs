//! `import-s3proxy`: the objects of the Python predecessor (s3proxy-python 2026.2.x),
//! given its key string: verify them, decrypt one, or re-encrypt them in place into
//! s3crypt's format (a version 3 single object under the active key; the predecessor's
//! manifest is deleted after the object was rewritten).

use std::io::Read;

use md5::{Digest, Md5};
use s3crypt_core::crypto::{new_dek, wrap_dek, OsRandom, Random, Suite};
use s3crypt_core::format::{
    single_stored_len, Decrypt, Envelope, FrameEncryptor, Geometry, Layout, Trailer,
    ENVELOPE_HEADER, MAX_SINGLE, SINGLE_ENVELOPE_VERSION,
};
use s3crypt_core::predecessor::{manifest_key, SegmentsDecryptor};

use crate::cmd::{list_objects, open_s3, verify_one};
use crate::keys::Keys;
use crate::object::{classify, Kind, MAX_PREDECESSOR_SEGMENT};
use crate::rewrap::{kept_headers, warn_versioning};
use crate::run::{for_each, Outcome};
use crate::s3::{object_path, tagging_header, Backend, Body};
use crate::{parse_location, Args, Fail, FailKind};

/// The stored bytes of a predecessor object in, s3crypt's format out: each segment is
/// verified before any of it is encrypted again; a failure (or a plaintext that is not
/// what the predecessor's metadata claims) ends the stream short, so the backend refuses
/// the upload (its Content-Length is not met) and nothing is half-written.
struct Reencrypt {
    src: Box<dyn Read + Send>,
    dec: SegmentsDecryptor,
    enc: FrameEncryptor,
    md5: Md5,
    claimed_md5: Option<String>,
    plain: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
    buf: Vec<u8>,
}

impl Read for Reencrypt {
    fn read(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        let bad = |m: String| std::io::Error::other(m);
        while self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.out.clear();
            self.pos = 0;
            let n = self.src.read(&mut self.buf)?;
            self.plain.clear();
            if n == 0 {
                self.dec
                    .finish()
                    .map_err(|e| bad(format!("predecessor object: {e:?}")))?;
                let md5: [u8; 16] = std::mem::take(&mut self.md5).finalize().into();
                if self
                    .claimed_md5
                    .as_ref()
                    .is_some_and(|m| !m.eq_ignore_ascii_case(&hex::encode(md5)))
                {
                    return Err(bad(
                        "the plaintext is not the predecessor's client-etag".into()
                    ));
                }
                self.enc
                    .finish(&mut self.out)
                    .map_err(|e| bad(format!("{e:?}")))?;
                if self.enc.geometry().plain_len > 0 {
                    let t = Trailer {
                        md5,
                        checksum: None,
                    };
                    self.enc
                        .seal_trailer(&t, &mut self.out)
                        .map_err(|e| bad(format!("{e:?}")))?;
                }
                self.done = true;
                continue;
            }
            self.dec
                .push(&self.buf[..n], &mut self.plain)
                .map_err(|e| bad(format!("predecessor object: {e:?}")))?;
            self.md5.update(&self.plain);
            self.enc
                .push(&self.plain, &mut self.out)
                .map_err(|e| bad(format!("{e:?}")))?;
        }
        let n = dst.len().min(self.out.len() - self.pos);
        dst[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn reencrypt_one(
    b: &Backend,
    bucket: &str,
    key: &str,
    keys: &Keys,
    dry: bool,
) -> Result<Outcome, Fail> {
    let (active_id, active) = keys.active()?;
    let o = open_s3(b, bucket, key, keys)?;
    if o.stored.headers.get(ENVELOPE_HEADER).is_some() {
        // (Whatever key it is under: this is not the predecessor's.)
        return Ok(Outcome::ok("skipped", 0, "already s3crypt"));
    }
    let kind = classify(&o.stored, keys)?;
    let manifest_read = o.stored.manifest.clone();
    let Kind::Predecessor {
        dek,
        segments,
        manifest,
        claimed_md5,
        claimed_size,
    } = kind
    else {
        // Counted apart: the filter refuses to serve it once the proxy is replaced.
        return Ok(Outcome::ok(
            "plaintext",
            0,
            "no envelope, not encrypted by the predecessor: left as it is",
        ));
    };
    let plain_len: u64 = segments.iter().map(|s| s.plain_len).sum();
    if claimed_size.is_some_and(|s| s != plain_len) {
        return Err(Fail::new(
            FailKind::Integrity,
            "the stored size is not the predecessor's plaintext-size",
        ));
    }
    let stored_len = single_stored_len(SINGLE_ENVELOPE_VERSION, plain_len)
        .filter(|&n| n <= MAX_SINGLE)
        .ok_or_else(|| {
            Fail::new(
                FailKind::Unsupported,
                "over 5 GiB: decrypt it and upload it through the filter",
            )
        })?;
    if SegmentsDecryptor::largest(&segments) > MAX_PREDECESSOR_SEGMENT {
        return Err(Fail::new(
            FailKind::Unsupported,
            "a segment larger than the tool holds in memory",
        ));
    }
    let layout = if manifest.is_some() {
        "multipart"
    } else {
        "single"
    };
    if dry {
        return Ok(Outcome::ok(
            "would reencrypt",
            plain_len,
            format!("s3proxy-python {layout} -> s3crypt single under {active_id}"),
        ));
    }
    let etag = o.stored.headers.get("etag").unwrap_or("").to_string();
    let rng = OsRandom;
    let new = new_dek(&rng).map_err(|_| Fail::new(FailKind::Io, "no randomness"))?;
    let wrapped = wrap_dek(active, &new).map_err(|_| Fail::new(FailKind::Io, "key wrap failed"))?;
    let mut env = Envelope::new(
        Suite::Aes256Gcm,
        Layout::Single,
        active_id,
        wrapped,
        Some(plain_len),
    );
    env.version = SINGLE_ENVELOPE_VERSION;
    env.seal(&new, &rng)
        .map_err(|_| Fail::new(FailKind::Io, "no randomness"))?;
    let meta = keys.predecessor_meta().to_string();
    let dropped = [
        format!("x-amz-meta-{meta}"),
        "x-amz-meta-client-etag".into(),
        "x-amz-meta-plaintext-size".into(),
    ];
    let dropped: Vec<&str> = dropped.iter().map(String::as_str).collect();
    let mut headers = kept_headers(&o.stored.headers, Some(&env.encode()), &dropped)?;
    let tags = b.tags(bucket, key)?;
    if !tags.is_empty() {
        headers.set("x-amz-tagging", tagging_header(&tags));
    }
    // Only while the object is still the version read. Unquoted: Ceph RGW compares a
    // write's If-Match with the stored ETag without its quotes (a quoted one always
    // fails, 412); AWS and MinIO accept either form.
    headers.set("if-match", etag.trim_matches('"'));
    let rng: std::rc::Rc<dyn Random> = std::rc::Rc::new(OsRandom);
    let body = Reencrypt {
        src: o.body,
        dec: SegmentsDecryptor::new(&dek, segments, MAX_PREDECESSOR_SEGMENT),
        enc: FrameEncryptor::new(Suite::Aes256Gcm, &new, Geometry::single(plain_len), &rng),
        md5: Md5::new(),
        claimed_md5,
        plain: Vec::new(),
        out: Vec::new(),
        pos: 0,
        done: false,
        buf: vec![0; 256 * 1024],
    };
    put_stream(b, bucket, key, headers, body, stored_len)?;
    if !tags.is_empty() {
        b.ensure_tags(bucket, key, &tags)?;
    }
    if manifest.is_some() {
        // Only the manifest this object was read with: one written since belongs to a
        // newer object of the key (its only copy of that object's data key).
        let mk = manifest_key(key);
        let now = b.get_if_exists(
            bucket,
            &mk,
            s3crypt_core::predecessor::MAX_MANIFEST_BODY as u64,
        )?;
        if now.is_some() && now == manifest_read {
            b.delete(bucket, &mk)?;
        } else if now.is_some() {
            return Err(Fail::new(
                FailKind::Changed,
                "the manifest changed while the object was re-encrypted: kept (run again)",
            ));
        }
    }
    Ok(Outcome::ok(
        "reencrypted",
        plain_len,
        format!("s3proxy-python {layout} -> s3crypt single under {active_id}"),
    ))
}

/// Uploads the re-encrypted object (`len` bytes; `If-Match` keeps it to the version read).
fn put_stream(
    b: &Backend,
    bucket: &str,
    key: &str,
    headers: s3crypt_core::headers::Headers,
    body: Reencrypt,
    len: u64,
) -> Result<(), Fail> {
    b.ok(
        "PUT",
        &object_path(bucket, key),
        &[],
        headers,
        Body::Stream(Box::new(body), len),
    )?;
    Ok(())
}

pub fn import(args: &Args) -> Result<bool, Fail> {
    let keys = args.keys()?;
    if keys.predecessor().is_none() {
        return Err(Fail::usage(
            "the predecessor's key: S3PROXY_ENCRYPT_KEY or --s3proxy-key-file".into(),
        ));
    }
    let mode = args.pos.get(1).map(String::as_str);
    let loc = args.pos.get(2).ok_or_else(|| {
        Fail::usage("import-s3proxy verify|decrypt|reencrypt s3://BUCKET[/PREFIX]".into())
    })?;
    let (bucket, prefix) = parse_location(loc)?;
    let b = args.backend()?;
    match mode {
        Some("decrypt") => {
            if prefix.is_empty() {
                return Err(Fail::usage(format!("{loc} names no key")));
            }
            let o = open_s3(&b, &bucket, &prefix, &keys)?;
            let kind = classify(&o.stored, &keys)?;
            if !matches!(kind, Kind::Predecessor { .. }) {
                return Err(Fail::new(
                    FailKind::Unencrypted,
                    format!(
                        "{loc} is not an object of the predecessor ({})",
                        kind.name()
                    ),
                ));
            }
            let mut o = o;
            let r = crate::cmd::with_output(args.output(), |w| {
                crate::object::read_into(&kind, o.stored.len, &mut o.body, w)
            })?;
            eprintln!(
                "s3crypt: {loc}: {}, {} bytes verified",
                kind.name(),
                r.plain_len
            );
            Ok(true)
        }
        Some("verify") => {
            let jobs = args.jobs()?;
            let (items, _) = list_objects(&b, &bucket, &prefix)?;
            // Objects that are not the predecessor's (s3crypt's, under whatever key, or
            // plaintext) are skipped, not failed: a bucket half migrated verifies.
            for_each(
                "import-s3proxy verify",
                items,
                jobs,
                args.get("--report"),
                &|l| verify_one(&b, &bucket, &l.key, &keys, true, true),
            )
        }
        Some("reencrypt") => {
            keys.active()?;
            let jobs = args.jobs()?;
            let dry = args.flag("--dry-run");
            warn_versioning(&b, &bucket);
            let (items, _) = list_objects(&b, &bucket, &prefix)?;
            let what = if dry {
                "import-s3proxy reencrypt (dry run)"
            } else {
                "import-s3proxy reencrypt"
            };
            for_each(what, items, jobs, args.get("--report"), &|l| {
                reencrypt_one(&b, &bucket, &l.key, &keys, dry).unwrap_or_else(Outcome::failed)
            })
        }
        _ => Err(Fail::usage(
            "import-s3proxy verify|decrypt|reencrypt s3://BUCKET[/PREFIX]".into(),
        )),
    }
}
