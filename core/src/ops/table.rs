//! Finding the part table of a multipart object version (FORMAT.md, "Reading the
//! structure"): from the per-process cache, else from its end part or closing table
//! (one read of its last 28,688 bytes), else by walking its parts. Used by reads (GET and
//! HEAD by range or part), CopyObject and UploadPartCopy of multipart objects; each keeps
//! its [`Lookup`] in its own state while the reads are in flight.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use sha2::{Digest as _, Sha256};

use super::cx::{Cx, SseFor};
use super::vm::LookupInFlight;
use super::CallOut;
use crate::format::part_table::{PartTable, Walk};
use crate::format::Envelope;
use crate::headers::Headers;
use crate::s3::error::S3Error;

/// A lookup in flight: the object version (at `path`, its ETag `etag`) and the walk.
pub(crate) struct Lookup {
    path: String,
    walk: Walk,
    etag: String,
    /// The read in flight.
    read: TableRead,
    /// Marks the lookup in flight for readers of the same version (range reads only).
    _shared: Option<LookupInFlight>,
    /// The SSE-C key the reads need.
    sse: SseFor,
}

/// Which read of a [`Lookup`] is in flight.
#[derive(Clone, Copy)]
enum TableRead {
    /// The object's last 28,688 bytes: an end part's or closing part's sealed table.
    End,
    /// The next step of the walk.
    Walk,
}

/// What a lookup read gave.
pub(crate) enum Found {
    /// The verified table (now cached).
    Table(PartTable),
    /// Not yet: make this read.
    Read(CallOut),
}

impl Lookup {
    /// Starts finding the table of the object version at `path` (stored size `stored`,
    /// `parts` parts, ETag `etag`): returns the lookup and its first read.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        cx: &Cx,
        env: &Envelope,
        dek: &crate::crypto::DataKey,
        path: String,
        etag: String,
        stored: u64,
        parts: u64,
        shared: Option<LookupInFlight>,
        sse: SseFor,
    ) -> (Lookup, CallOut) {
        let numbered = env.version >= 2;
        let mut walk = Walk::new(env.suite, dek, stored, parts, numbered);
        walk.version = table_version(&etag, stored, env);
        let (range, read) = match walk.end_read() {
            Some(range) => (range, TableRead::End),
            None => (walk.next_read(), TableRead::Walk),
        };
        let mut l = Lookup {
            path,
            walk,
            etag,
            read,
            _shared: shared,
            sse,
        };
        let call = l.call(cx, range, read);
        (l, call)
    }

    /// The ETag of the version looked up.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// Reads stored bytes `first..=last` of the version.
    fn call(&mut self, cx: &Cx, (first, last): (u64, u64), read: TableRead) -> CallOut {
        let mut h = cx.sse_request_at(
            "GET",
            self.path.clone(),
            Some(format!("bytes={first}-{last}")),
            self.sse,
        );
        h.set("if-match", self.etag.clone());
        self.read = read;
        cx.backend_callout(h)
    }

    /// A read answered: the table (cached per Envoy process, keyed by the object version:
    /// ETag, size, wrapped key), or the next read.
    pub fn answered(&mut self, cx: &Cx, resp: Option<(&Headers, &[u8])>) -> Result<Found, S3Error> {
        let body = table_read(&self.etag, resp)?;
        let found = match self.read {
            TableRead::End => self.walk.try_end(body),
            TableRead::Walk => self.walk.push(body).map_err(|_| cx.integrity())?,
        };
        match found {
            Some(t) => {
                cache_table(cx, &self.walk.version, &t);
                Ok(Found::Table(t))
            }
            None => {
                let range = self.walk.next_read();
                Ok(Found::Read(self.call(cx, range, TableRead::Walk)))
            }
        }
    }
}

/// The part table of an object version cached by an earlier lookup, if it fits.
/// `numbered`: the object's parts must be numbered 1..N and end with a final part
/// (version 2 envelopes).
pub(crate) fn cached_table(
    cx: &Cx,
    version: &str,
    stored: u64,
    parts: u64,
    numbered: bool,
) -> Option<PartTable> {
    let v = cx.ports.store.get(&table_slot(version))?;
    let table = v.strip_prefix(version.as_bytes())?.strip_prefix(b"\n")?;
    PartTable::decode(table).filter(|t| {
        t.stored_len() == stored
            && t.count() as u64 == parts
            && (!numbered || t.numbered_from_one())
            && t.ends_final() == numbered
    })
}

/// Caches a found part table in its slot (replacing whatever version was there).
fn cache_table(cx: &Cx, version: &str, t: &PartTable) {
    cx.ports.store.set(
        &table_slot(version),
        format!("{version}\n{}", t.encode()).as_bytes(),
    );
}

/// The bytes of a read made to find a part table: a 206 of the version `etag` names.
pub(crate) fn table_read<'a>(
    etag: &str,
    resp: Option<(&Headers, &'a [u8])>,
) -> Result<&'a [u8], S3Error> {
    let Some((h, body)) = resp.filter(|(h, _)| h.get(":status") == Some("206")) else {
        return Err(S3Error::slow_down(
            "s3crypt: the object changed or could not be read while its part table was read; please retry",
        ));
    };
    if h.get("etag").is_some_and(|e| e != etag) {
        return Err(S3Error::slow_down(
            "s3crypt: the object changed; please retry",
        ));
    }
    Ok(body)
}

pub(crate) fn parts_in_etag(etag: &str) -> Option<u64> {
    etag.trim_matches('"')
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .filter(|n| (1..=10_000).contains(n))
}

/// Shared-data key of a multipart object's part table: one per object version.
/// Slots of the part-table cache per Envoy process: a table lives in the slot its object
/// version hashes to, so the cache holds at most this many tables (each at most about
/// 150 KB, for 10,000 parts; typically well under 1 KB) whatever is read.
pub(crate) const TABLE_SLOTS: u64 = 256;

/// Shared-data key of the cache slot for an object version (ETag and stored size), and
/// the version tag stored in it.
/// The object version a part table belongs to: ETag and stored size, which the provider
/// reports, and the object's wrapped data key, which it cannot forge for another object
/// (a table cached for one object never serves another with the same ETag and size).
pub(crate) fn table_version(etag: &str, stored: u64, env: &Envelope) -> String {
    format!(
        "{}/{stored}/{}",
        etag.trim_matches('"'),
        hex::encode(env.wrapped_dek)
    )
}

/// The cache slot of an object version.
pub(crate) fn table_slot(version: &str) -> String {
    let h = Sha256::digest(version.as_bytes());
    let n = u64::from_be_bytes(h.first_chunk().copied().unwrap_or([0; 8])) % TABLE_SLOTS;
    format!("s3crypt/pt/{n}")
}
