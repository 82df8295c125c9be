//! What the requests of one VM (one Envoy worker thread) share, passed to each of them:
//! the memory budget of copies and staged parts, and the part-table lookups in flight.

use std::rc::Rc;

/// What the requests of one VM (one Envoy worker thread) share, passed to each of them:
/// the memory UploadPartCopy and staged parts hold, and the part-table lookups in flight.
#[derive(Default)]
pub struct VmState {
    /// Bytes held by copy buffers and staged parts.
    copy_bytes: std::cell::Cell<u64>,
    /// Object versions whose part table a request is looking up, and those whose lookup
    /// ended since the glue last asked: concurrent first readers of a version wait for
    /// the one lookup instead of each making their own.
    lookups: std::cell::RefCell<(std::collections::HashSet<String>, Vec<String>)>,
}

impl VmState {
    /// The object versions whose part-table lookup ended since the last call: requests
    /// that wait for them ([`RequestStep::Wait`]) can go on.
    pub fn finished_lookups(&self) -> Vec<String> {
        std::mem::take(&mut self.lookups.borrow_mut().1)
    }
}

/// An object version whose part table this request is looking up, until dropped (the
/// lookup ended, failed, or the request went away).
pub(crate) struct LookupInFlight(Rc<VmState>, String);

impl LookupInFlight {
    /// Marks `version` in flight, unless another request already looks it up.
    pub(crate) fn start(vm: &Rc<VmState>, version: &str) -> Option<LookupInFlight> {
        vm.lookups
            .borrow_mut()
            .0
            .insert(version.to_string())
            .then(|| LookupInFlight(Rc::clone(vm), version.to_string()))
    }
}

impl Drop for LookupInFlight {
    fn drop(&mut self) {
        let mut l = self.0.lookups.borrow_mut();
        l.0.remove(&self.1);
        l.1.push(std::mem::take(&mut self.1));
    }
}

/// A share of the per-VM copy memory budget, given back when dropped.
pub(crate) struct CopyReservation(Rc<VmState>, u64);

impl CopyReservation {
    /// Reserves `bytes` if the VM's copies and staged parts then hold at most `limit`.
    pub(crate) fn try_new(vm: &Rc<VmState>, bytes: u64, limit: u64) -> Option<CopyReservation> {
        let c = &vm.copy_bytes;
        let now = c.get().checked_add(bytes).filter(|&n| n <= limit)?;
        c.set(now);
        Some(CopyReservation(Rc::clone(vm), bytes))
    }
}

impl Drop for CopyReservation {
    fn drop(&mut self) {
        let c = &self.0.copy_bytes;
        c.set(c.get().saturating_sub(self.1));
    }
}
