//! The XML rewriters of `s3::xml` on arbitrary response bodies, called as `ops` calls
//! them (text decoded lossily, then rewritten).
//!
//! - `rewrite_sizes` with the maps `ops` uses (part sizes, listing sizes) never makes a
//!   body longer (both only lower a size), with any map at most 19 bytes longer per
//!   rewritten entry (a size of one digit becomes one of 20), and with no change at all
//!   the body is kept byte for byte;
//! - a rewritten body reads back with the new sizes, entry for entry;
//! - `replace_element_text` sets the first ETag to exactly the value given;
//! - the readers (`element_text(s)`, `root_element`, `ends_with_root`) do not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3crypt_core::format::{plain_size_from_listing, PART_OVERHEAD};
use s3crypt_core::s3::error::xml_escape;
use s3crypt_core::s3::xml;

/// The sizes of the entries, as `rewrite_sizes` reads them.
fn sizes(text: &str) -> Option<Vec<u64>> {
    let mut seen = Vec::new();
    let out = xml::rewrite_sizes(text, &mut |s, _| {
        seen.push(s);
        None
    })
    .ok()?;
    assert_eq!(out, text, "an unchanged listing is not kept byte for byte");
    Some(seen)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some(before) = sizes(&text) else {
        // Not a listing: then no map makes one of it.
        assert!(xml::rewrite_sizes(&text, &mut |s, _| Some(s)).is_err());
        return;
    };

    type Map = fn(u64, &str) -> Option<u64>;
    let maps: [(Map, bool); 3] = [
        (|s, _| s.checked_sub(PART_OVERHEAD), true),
        (|s, e| plain_size_from_listing(s, e), true),
        (|s, _| Some(u64::MAX - s), false),
    ];
    for (map, shrinks) in maps {
        let (mut read, mut want, mut rewritten) = (Vec::new(), Vec::new(), 0);
        let out = xml::rewrite_sizes(&text, &mut |s, e| {
            read.push(s);
            let n = map(s, e);
            rewritten += usize::from(n.is_some());
            want.push(n.unwrap_or(s));
            n
        })
        .expect("a listing that reads does not fail to rewrite");
        assert_eq!(read, before);
        let bound = if shrinks {
            text.len()
        } else {
            text.len() + 19 * rewritten
        };
        assert!(
            out.len() <= bound,
            "{} bytes became {}",
            text.len(),
            out.len()
        );
        assert_eq!(sizes(&out), Some(want), "rewritten sizes do not read back");
    }

    let etag = "\"3858f62230ac3c915f300c664312c11f-9\" & <é>";
    if let Some(out) = xml::replace_element_text(&text, "ETag", etag) {
        let old = xml::element_text(&text, "ETag").unwrap();
        assert!(out.len() <= text.len() + xml_escape(etag).len());
        assert_eq!(
            xml::element_text(&out, "ETag").as_deref(),
            Some(etag),
            "{old:?}"
        );
    }
    for name in ["ETag", "PartNumber", "Key", "UploadId", "Code"] {
        let all = xml::element_texts(&text, name);
        assert_eq!(all.first(), xml::element_text(&text, name).as_ref());
    }
    if let Some(root) = xml::root_element(data) {
        xml::ends_with_root(data, root);
    }
});
