//! The effects an operation needs, as ports the shell implements (Envoy's metrics, log,
//! shared data, clock and WASI randomness in `wasm/`; in-memory ones in tests). Call-outs
//! are not a port: an operation returns a [`super::CallOut`] command and is handed the
//! response, matched by the token the host gave the call-out.

use std::rc::Rc;

pub use crate::crypto::{OsRandom, Random, SeededRandom};

/// Every port one request uses, cloned (cheaply: shared pointers) into each exchange.
#[derive(Clone)]
pub struct Ports {
    pub stats: Rc<dyn Stats>,
    pub store: Rc<dyn SharedStore>,
    pub clock: Rc<dyn Clock>,
    pub rng: Rc<dyn Random>,
}

/// Counters the filter exports (Envoy: `wasmcustom.s3crypt_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    ObjectsEncrypted,
    BytesEncrypted,
    ObjectsDecrypted,
    BytesDecrypted,
    AuthFailures,
    IntegrityFailures,
    RejectedRequests,
    /// Envelope-less objects served inside a passthrough scope.
    PlaintextServed,
    /// Listed single objects looked up at the backend (not in the ETag cache).
    ListingLookups,
    /// Listing pages cut short because more objects were unknown than one page looks up.
    ListingsCut,
    /// Whole reads answered 503 SlowDown because the backend sent another version than
    /// the one this process last saw (overwritten through another replica or directly).
    VersionsChanged,
    /// Objects of the Python predecessor served (`predecessor_read`).
    PredecessorServed,
}

impl Counter {
    pub const ALL: [Counter; 12] = [
        Counter::ObjectsEncrypted,
        Counter::BytesEncrypted,
        Counter::ObjectsDecrypted,
        Counter::BytesDecrypted,
        Counter::AuthFailures,
        Counter::IntegrityFailures,
        Counter::RejectedRequests,
        Counter::PlaintextServed,
        Counter::ListingLookups,
        Counter::ListingsCut,
        Counter::VersionsChanged,
        Counter::PredecessorServed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Counter::ObjectsEncrypted => "s3crypt_objects_encrypted",
            Counter::BytesEncrypted => "s3crypt_bytes_encrypted",
            Counter::ObjectsDecrypted => "s3crypt_objects_decrypted",
            Counter::BytesDecrypted => "s3crypt_bytes_decrypted",
            Counter::AuthFailures => "s3crypt_auth_failures",
            Counter::IntegrityFailures => "s3crypt_integrity_failures",
            Counter::RejectedRequests => "s3crypt_rejected_requests",
            Counter::PlaintextServed => "s3crypt_plaintext_served",
            Counter::ListingLookups => "s3crypt_listing_lookups",
            Counter::ListingsCut => "s3crypt_listings_cut",
            Counter::VersionsChanged => "s3crypt_versions_changed",
            Counter::PredecessorServed => "s3crypt_predecessor_served",
        }
    }
}

/// Where counters go (Envoy metrics in the glue, a map in tests).
pub trait Stats {
    fn add(&self, c: Counter, n: u64);
    /// An event worth a log line (Envoy's log at info level in the glue). Never secrets.
    fn note(&self, _msg: &str) {}
}

/// The time, read wherever a signature, a TTL or a timestamp needs it (a long copy signs
/// its last backend request with the time it is sent, not the time it began).
pub trait Clock {
    /// Unix seconds now.
    fn now(&self) -> i64;
}

/// A clock that reads what it is set to (tests step it).
impl Clock for std::cell::Cell<i64> {
    fn now(&self) -> i64 {
        self.get()
    }
}

/// A store shared by every worker of one Envoy process (Envoy shared data in the glue).
pub trait SharedStore {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn set(&self, key: &str, value: &[u8]) -> bool;
    fn remove(&self, key: &str);
    /// Replaces the value of `key` with what `f` makes of the current one (`None`: absent),
    /// so that no concurrent update by another worker is lost (compare-and-swap, retried a
    /// few times). `false` if it could not be stored.
    fn update(&self, key: &str, f: &dyn Fn(Option<&[u8]>) -> Vec<u8>) -> bool;
}
