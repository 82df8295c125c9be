//! Conditional writes: `If-None-Match: *` and `If-Match` on PutObject,
//! CompleteMultipartUpload and CopyObject (its destination), and `If-Match` on
//! DeleteObject. The backend must enforce them (only it can decide atomically), and it
//! only knows its own ETags (those of the ciphertext), so with
//! `conditional_writes: backend` the filter checks the client's `If-Match` against the
//! ETag the client sees (a HEAD of the object) and sends upstream
//! `If-Match: <the backend's ETag of that version>`: the write then only happens if the
//! object is still the version the client named. With `refuse` (the default) any such
//! condition is answered 501: a backend that ignores them (Ceph RGW 16 ignores
//! `If-None-Match: *` on PUT) would otherwise overwrite silently.

use super::cx::{no_such_key, precondition_failed, Cx};
use super::get::etag_list_matches;
use crate::config::ConditionalWrites;
use crate::format::ENVELOPE_HEADER;
use crate::headers::Headers;
use crate::s3::error::S3Error;

/// Conditions on a write that S3 has and the filter cannot evaluate truthfully (sizes of
/// the plaintext, which the backend does not know): always refused.
const REFUSED_CONDITIONS: &[&str] = &["x-amz-if-match-size"];

/// The write conditions of a request (`h`: the verified view): `Ok(None)` when the
/// request goes on as it is (none, or `If-None-Match: *` in backend mode, left on `up`),
/// `Ok(Some(list))` when the client's `If-Match` list must first be checked (removed from
/// `up`; see [`checked`]), or the refusal.
pub(crate) fn write_conditions(
    cx: &Cx,
    h: &Headers,
    up: &mut Headers,
) -> Result<Option<String>, S3Error> {
    if let Some(n) = REFUSED_CONDITIONS.iter().find(|n| h.contains(n)) {
        return Err(S3Error::not_implemented(format!(
            "s3crypt: {n} cannot be evaluated by the encryption proxy (the backend only knows ciphertext sizes)"
        )));
    }
    let if_match = h.get("if-match").map(str::to_string);
    let if_none = h.get("if-none-match").map(str::to_string);
    if if_match.is_none() && if_none.is_none() {
        return Ok(None);
    }
    if cx.cfg.plugin.conditional_writes == ConditionalWrites::Refuse {
        return Err(S3Error::not_implemented(
            "s3crypt: conditional writes (If-None-Match / If-Match) are not enabled on this proxy (conditional_writes: refuse): the backend may not enforce them",
        ));
    }
    if if_none.as_deref().is_some_and(|v| v.trim() != "*") {
        return Err(S3Error::not_implemented(
            "A header you provided implies functionality that is not implemented (If-None-Match takes only *)",
        ));
    }
    up.remove("if-match");
    Ok(if_match)
}

/// The object's HEAD answered for the client's `If-Match` list: the backend's ETag to
/// send upstream as `If-Match`, or the answer S3 gives (412, 404 for no object).
/// `learnt`: what a read of the object's trailer found, if one was made.
pub(crate) fn checked(
    cx: &Cx,
    resp: Option<&Headers>,
    list: &str,
    learnt: Option<&super::etags::Known>,
) -> Result<String, S3Error> {
    let resp = resp.ok_or_else(|| {
        S3Error::service_unavailable("s3crypt: the object could not be read; please retry")
    })?;
    match resp.get(":status").unwrap_or("") {
        "200" => {}
        "404" => return Err(no_such_key()),
        "403" => return Err(S3Error::access_denied("Access Denied")),
        _ => {
            return Err(S3Error::service_unavailable(
                "s3crypt: the object could not be read; please retry",
            ))
        }
    }
    let backend = resp.get("etag").unwrap_or("").to_string();
    if backend.is_empty() {
        return Err(cx.integrity());
    }
    let visible = match resp.get(ENVELOPE_HEADER) {
        Some(ev) => super::etags::visible_with(cx, &cx.open_envelope(ev)?.0, resp, learnt),
        None => {
            let (bucket, key) = cx.req.as_ref().map_or(("", ""), |r| {
                (
                    r.bucket.as_deref().unwrap_or(""),
                    r.key.as_deref().unwrap_or(""),
                )
            });
            if !cx.cfg.passthrough_allowed(bucket, key) {
                return Err(cx.integrity());
            }
            backend.clone()
        }
    };
    if etag_list_matches(list, &visible) {
        Ok(backend)
    } else {
        Err(precondition_failed())
    }
}
