//! Staged short last parts (FORMAT.md, "How a version 2 multipart object ends"): the
//! ciphertext of a short last part an UploadPart or UploadPartCopy sent is kept in the
//! state store, so that CompleteMultipartUpload can rewrite it as the closing part.

use super::cx::Cx;
use super::vm::CopyReservation;
use super::CallOut;
use crate::config::StateStore;
use crate::format::{Geometry, Layout};
use crate::state::{self, stage};

/// Whether (and with what memory) an UploadPart keeps its ciphertext for Complete: a
/// version 2 part in layout `final` stored under 5 MiB, numbered below 10,000, when
/// staging is on and the budget allows.
pub(crate) fn stage_for(cx: &Cx, v2: bool, geo: &Geometry) -> Option<(Vec<u8>, CopyReservation)> {
    let p = &cx.cfg.plugin;
    let store = match p.state_store {
        StateStore::SharedData => p.staging_slots > 0,
        StateStore::Redis => true,
    };
    let len = geo.cipher_len()?;
    if !(v2
        && p.stage_short_parts
        && store
        && geo.layout == Layout::Final
        && len < crate::format::MIN_PART_SIZE
        && geo.part < crate::format::MAX_PART_NUMBER)
    {
        return None;
    }
    let held = CopyReservation::try_new(&cx.vm, len, p.max_copy_buffer_bytes)?;
    Some((Vec::with_capacity(usize::try_from(len).ok()?), held))
}

/// A short last part of upload `upload_id` the backend stored: its copy goes to the
/// state store, in shared data at once, or in Redis by the returned call-out (the
/// response waits for it; best effort: without it the object completes without a table).
pub(crate) fn stage_part(
    cx: &Cx,
    upload_id: &str,
    cipher: Vec<u8>,
    number: u32,
) -> Option<CallOut> {
    let rec = stage::encode(upload_id, cx.now(), number, &cipher);
    drop(cipher);
    let ttl = cx.cfg.plugin.upload_ttl_secs;
    match cx.cfg.plugin.state_store {
        StateStore::SharedData => {
            if let Some((i, seq)) = stage::choose_slot(&owners(cx), upload_id, cx.now(), ttl) {
                let owner = stage::owner_line(upload_id, cx.now(), seq);
                cx.ports.store.set(&stage::owner_key(i), owner.as_bytes());
                cx.ports.store.set(&stage::slot_key(i), &rec);
            }
            None
        }
        StateStore::Redis => {
            let set = state::setex(&cx.cfg, &stage::redis_key(upload_id), ttl, &rec);
            Some(cx.webdis(set))
        }
    }
}

/// The staged copy of an upload's short last part in shared data, if it is there.
pub(crate) fn staged_shared(cx: &Cx, upload_id: &str) -> Option<stage::Staged> {
    let i = stage::find_slot(&owners(cx), upload_id)?;
    stage::decode(&cx.ports.store.get(&stage::slot_key(i))?, upload_id)
}

/// The owner lines of the shared-data staging slots.
fn owners(cx: &Cx) -> Vec<Option<Vec<u8>>> {
    (0..cx.cfg.plugin.staging_slots)
        .map(|i| cx.ports.store.get(&stage::owner_key(i)))
        .collect()
}

/// Forgets an upload once the backend completed or aborted it: its record, part entries
/// and staged part at once in shared data; in Redis by the returned call-out (the response waits
/// for it; best effort: the TTL removes them anyway).
pub(crate) fn forget_upload(cx: &Cx, upload_id: &str) -> Option<CallOut> {
    cx.ports.store.remove(&state::shared_key(upload_id));
    cx.ports.store.remove(&state::parts::shared_key(upload_id));
    match cx.cfg.plugin.state_store {
        StateStore::SharedData => {
            if let Some(i) = stage::find_slot(&owners(cx), upload_id) {
                cx.ports.store.remove(&stage::slot_key(i));
                cx.ports.store.remove(&stage::owner_key(i));
            }
            None
        }
        StateStore::Redis => {
            let keys = [
                state::redis_key(upload_id),
                stage::redis_key(upload_id),
                state::parts::redis_key(upload_id),
            ];
            Some(cx.webdis(state::del_keys(&cx.cfg, &keys)))
        }
    }
}
