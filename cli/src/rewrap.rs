//! `rewrap`: key rotation without re-encryption. Each object's data key is unwrapped with
//! the key its envelope names and wrapped again under the active key; only the envelope
//! changes, written by a server-side copy of the object onto itself (CopyObject with
//! REPLACE; for multipart objects a multipart copy of the same parts, so that the object
//! keeps its part structure and its `-N` ETag). User metadata, content headers, storage
//! class, server-side encryption and tags are kept. Objects already under the active key
//! are skipped, so an interrupted run is resumed by running it again.

use s3crypt_core::crypto::{wrap_dek, OsRandom};
use s3crypt_core::format::{Envelope, ENVELOPE_HEADER, MAX_SINGLE};
use s3crypt_core::headers::Headers;
use s3crypt_core::s3::{uri, xml};

use crate::cmd::{list_objects, part_table, S3Ranges};
use crate::keys::Keys;
use crate::object::{classify, open_envelope, Kind, Stored};
use crate::run::{for_each, Outcome};
use crate::s3::{object_path, tagging_header, xml_escape, Backend, Body};
use crate::{parse_location, Args, Fail, FailKind};

/// Content headers an object keeps through a copy with REPLACE (which drops them unless
/// they are given again).
const KEPT: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "x-amz-website-redirect-location",
    "x-amz-storage-class",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-bucket-key-enabled",
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
];

/// The headers of the rewritten object: everything kept from its HEAD, with `envelope`.
pub fn kept_headers(
    head: &Headers,
    envelope: Option<&str>,
    drop_meta: &[&str],
) -> Result<Headers, Fail> {
    if head.contains("x-amz-server-side-encryption-customer-algorithm") {
        return Err(Fail::new(
            FailKind::Unsupported,
            "the object uses SSE-C: a server-side copy needs its customer key",
        ));
    }
    let mut h = Headers::new();
    for (k, v) in head.iter() {
        let k = k.to_ascii_lowercase();
        let user_meta = k.starts_with("x-amz-meta-");
        if (user_meta && k != ENVELOPE_HEADER && !drop_meta.contains(&k.as_str()))
            || KEPT.contains(&k.as_str())
        {
            h.0.push((k, v.clone()));
        }
    }
    if let Some(e) = envelope {
        h.set(ENVELOPE_HEADER, e);
    }
    Ok(h)
}

fn copy_source(bucket: &str, key: &str) -> String {
    format!("/{}/{}", uri::encode(bucket, true), uri::encode(key, false))
}

/// A 200 of CopyObject / UploadPartCopy / Complete can still carry an error document.
fn check_body(text: &str, what: &str) -> Result<(), Fail> {
    if xml::root_element(text.as_bytes()) == Some("Error") {
        let code = xml::element_text(text, "Code").unwrap_or_default();
        return Err(Fail::backend(format!("{what}: {code}")));
    }
    Ok(())
}

/// Writes `headers` (metadata and envelope) onto the stored bytes of `bucket/key`,
/// server-side, as long as the object is still the version with ETag `etag`; then makes
/// its tags `tags` again (read before: a copy with REPLACE may drop them).
#[allow(clippy::too_many_arguments)]
pub fn rewrite_in_place(
    b: &Backend,
    bucket: &str,
    key: &str,
    etag: &str,
    stored: u64,
    kind: &Kind,
    headers: Headers,
    tags: &[(String, String)],
) -> Result<(), Fail> {
    rewrite_stored(b, bucket, key, etag, stored, kind, headers, tags)?;
    if tags.is_empty() {
        return Ok(());
    }
    b.ensure_tags(bucket, key, tags)
}

#[allow(clippy::too_many_arguments)]
fn rewrite_stored(
    b: &Backend,
    bucket: &str,
    key: &str,
    etag: &str,
    stored: u64,
    kind: &Kind,
    mut headers: Headers,
    tags: &[(String, String)],
) -> Result<(), Fail> {
    let path = object_path(bucket, key);
    let src = copy_source(bucket, key);
    match kind {
        Kind::S3crypt { parts: None, .. } => {
            if stored > MAX_SINGLE {
                return Err(Fail::new(
                    FailKind::Unsupported,
                    "a single object over 5 GiB stored cannot be copied in place",
                ));
            }
            headers.set("x-amz-copy-source", src);
            headers.set("x-amz-copy-source-if-match", etag);
            headers.set("x-amz-metadata-directive", "REPLACE");
            headers.set("x-amz-tagging-directive", "COPY");
            let text = b.ok("PUT", &path, &[], headers, Body::Empty)?.text()?;
            check_body(&text, "CopyObject")
        }
        Kind::S3crypt { parts: Some(_), .. } => {
            let table = part_table(
                kind,
                stored,
                &mut S3Ranges {
                    b,
                    bucket,
                    key,
                    etag,
                },
            )?;
            if !tags.is_empty() {
                headers.set("x-amz-tagging", tagging_header(tags));
            }
            let text = b
                .ok("POST", &path, &[("uploads", "")], headers, Body::Empty)?
                .text()?;
            let id = xml::element_text(&text, "UploadId")
                .ok_or_else(|| Fail::backend("no UploadId".into()))?;
            let r = (|| {
                let mut done = String::from("<CompleteMultipartUpload>");
                for (n, len, off) in table.stored_parts() {
                    let mut h = Headers::new();
                    h.set("x-amz-copy-source", src.clone());
                    h.set("x-amz-copy-source-if-match", etag);
                    let last = off
                        .checked_add(len)
                        .and_then(|e| e.checked_sub(1))
                        .ok_or_else(|| {
                            Fail::new(FailKind::Length, "a part table entry out of range")
                        })?;
                    h.set("x-amz-copy-source-range", format!("bytes={off}-{last}"));
                    let num = n.to_string();
                    let text = b
                        .ok(
                            "PUT",
                            &path,
                            &[("partNumber", &num), ("uploadId", &id)],
                            h,
                            Body::Empty,
                        )?
                        .text()?;
                    check_body(&text, "UploadPartCopy")?;
                    let part_etag = xml::element_text(&text, "ETag")
                        .ok_or_else(|| Fail::backend("UploadPartCopy: no ETag".into()))?;
                    done.push_str(&format!(
                        "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                        xml_escape(&part_etag)
                    ));
                }
                done.push_str("</CompleteMultipartUpload>");
                let mut h = Headers::new();
                h.set("content-type", "application/xml");
                // Only onto the version copied (a write since wins; unquoted, as RGW wants).
                h.set("if-match", etag.trim_matches('"'));
                let text = b
                    .ok(
                        "POST",
                        &path,
                        &[("uploadId", &id)],
                        h,
                        Body::Bytes(done.into_bytes()),
                    )?
                    .text()?;
                check_body(&text, "CompleteMultipartUpload")
            })();
            if r.is_err() {
                let _ = b.send(
                    "DELETE",
                    &path,
                    &[("uploadId", &id)],
                    Headers::new(),
                    Body::Empty,
                );
            }
            r
        }
        _ => Err(Fail::new(FailKind::Unsupported, "not an s3crypt object")),
    }
}

/// One object: skipped, rewrapped (or, in a dry run, what would be done), or failed.
fn rewrap_one(
    b: &Backend,
    bucket: &str,
    key: &str,
    keys: &Keys,
    dry: bool,
) -> Result<Outcome, Fail> {
    let (active_id, active) = keys.active()?;
    let head = b.head(bucket, key)?.headers;
    let Some(v) = head.get(ENVELOPE_HEADER) else {
        return Ok(Outcome::ok("skipped", 0, "no s3crypt envelope"));
    };
    let named = Envelope::decode(v).map(|e| e.key_id).unwrap_or_default();
    if named == active_id {
        return Ok(Outcome::ok(
            "skipped",
            0,
            format!("already under {active_id}"),
        ));
    }
    let stored: u64 = head
        .get("content-length")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let etag = head.get("etag").unwrap_or("").to_string();
    let st = Stored {
        headers: head.clone(),
        len: stored,
        manifest: None,
    };
    let kind = classify(&st, keys)?;
    let (mut env, dek) = open_envelope(v, keys)?;
    env.key_id = active_id.to_string();
    env.wrapped_dek =
        wrap_dek(active, &dek).map_err(|_| Fail::new(FailKind::Io, "key wrap failed"))?;
    env.seal(&dek, &OsRandom)
        .map_err(|_| Fail::new(FailKind::Io, "no randomness"))?;
    let encoded = env.encode();
    // The new envelope must open with the active key before anything is written.
    let check = open_envelope(&encoded, keys)?;
    drop(check);
    let detail = format!("{named} -> {active_id} ({})", kind.name());
    if dry {
        return Ok(Outcome::ok("would rewrap", 0, detail));
    }
    let headers = kept_headers(&head, Some(&encoded), &[])?;
    let tags = b.tags(bucket, key)?;
    rewrite_in_place(b, bucket, key, &etag, stored, &kind, headers, &tags)?;
    // What the backend now holds: the new envelope, the same bytes.
    let after = b.head(bucket, key)?.headers;
    let same_len = after.get("content-length") == head.get("content-length");
    if after.get(ENVELOPE_HEADER) != Some(encoded.as_str()) || !same_len {
        return Err(Fail::new(
            FailKind::Changed,
            "the object read back is not the one rewritten (written to concurrently?)",
        ));
    }
    Ok(Outcome::ok("rewrapped", 0, detail))
}

/// Whether versioning is (or was) on: then older versions keep their old key.
pub fn warn_versioning(b: &Backend, bucket: &str) {
    let r = b.ok(
        "GET",
        &format!("/{}", uri::encode(bucket, true)),
        &[("versioning", "")],
        Headers::new(),
        Body::Empty,
    );
    if let Ok(text) = r.and_then(|r| r.text()) {
        if let Some(s) = xml::element_text(&text, "Status") {
            eprintln!(
                "s3crypt: warning: versioning is {s} on {bucket}: only current versions are rewritten; \
                 noncurrent versions keep their old key (keep it configured while they matter)"
            );
        }
    }
}

pub fn rewrap(args: &Args) -> Result<bool, Fail> {
    let keys = args.keys()?;
    let (active, _) = keys.active()?;
    let loc = args
        .pos
        .get(1)
        .ok_or_else(|| Fail::usage("rewrap what? s3://BUCKET[/PREFIX]".into()))?;
    let (bucket, prefix) = parse_location(loc)?;
    let jobs = args.jobs()?;
    let b = args.backend()?;
    let dry = args.flag("--dry-run");
    warn_versioning(&b, &bucket);
    let (items, _) = list_objects(&b, &bucket, &prefix)?;
    eprintln!(
        "s3crypt: rewrapping {} objects under {loc} to key {active}{}",
        items.len(),
        if dry { " (dry run)" } else { "" }
    );
    let what = if dry { "rewrap (dry run)" } else { "rewrap" };
    for_each(what, items, jobs, args.get("--report"), &|l| {
        rewrap_one(&b, &bucket, &l.key, &keys, dry).unwrap_or_else(Outcome::failed)
    })
}
