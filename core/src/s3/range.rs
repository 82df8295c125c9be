//! HTTP Range headers, as S3 reads them: one range per request, in one of the forms
//! `bytes=a-b`, `bytes=a-` and `bytes=-n`. Anything else (several ranges, another unit,
//! a malformed or inverted range) is ignored and the whole object is returned, as S3 does.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    FromTo(u64, u64),
    From(u64),
    Suffix(u64),
}

/// Parses a Range header value; `None` when S3 would ignore it.
pub fn parse_range(v: &str) -> Option<RangeSpec> {
    let spec = v.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    match (a.is_empty(), b.is_empty()) {
        (true, false) => num(b).map(RangeSpec::Suffix),
        (false, true) => num(a).map(RangeSpec::From),
        (false, false) => {
            let (a, b) = (num(a)?, num(b)?);
            (a <= b).then_some(RangeSpec::FromTo(a, b))
        }
        (true, true) => None,
    }
}

/// Resolves a range against an object of `len` bytes: the first and last (inclusive)
/// byte, or `Err(())` when S3 answers 416 InvalidRange (start at or past the end, an
/// empty suffix, any range of an empty object).
#[allow(clippy::result_unit_err)]
pub fn resolve(spec: RangeSpec, len: u64) -> Result<(u64, u64), ()> {
    // The object's last byte (none: an empty object).
    let end = len.checked_sub(1).ok_or(())?;
    match spec {
        RangeSpec::FromTo(a, b) if a < len => Ok((a, b.min(end))),
        RangeSpec::From(a) if a < len => Ok((a, end)),
        // A suffix longer than the object is all of it.
        RangeSpec::Suffix(n) if n > 0 => Ok((len.saturating_sub(n), end)),
        _ => Err(()),
    }
}

/// Bytes in `first..=last`: `None` when the range is inverted (or is all 2^64 offsets).
pub fn span(first: u64, last: u64) -> Option<u64> {
    last.checked_sub(first)?.checked_add(1)
}

/// The Content-Range value of a partial response.
pub fn content_range(first: u64, last: u64, len: u64) -> String {
    format!("bytes {first}-{last}/{len}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_s3_forms() {
        assert_eq!(parse_range("bytes=0-9"), Some(RangeSpec::FromTo(0, 9)));
        assert_eq!(parse_range(" bytes=5- "), Some(RangeSpec::From(5)));
        assert_eq!(parse_range("bytes=-7"), Some(RangeSpec::Suffix(7)));
        for ignored in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=9-3",
            "bytes=-",
            "bytes=a-b",
            "0-9",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn resolves_like_s3() {
        assert_eq!(resolve(RangeSpec::FromTo(0, 99), 10), Ok((0, 9)));
        assert_eq!(resolve(RangeSpec::From(10), 10), Err(()));
        assert_eq!(resolve(RangeSpec::Suffix(0), 10), Err(()));
        assert_eq!(resolve(RangeSpec::Suffix(50), 10), Ok((0, 9)));
        assert_eq!(resolve(RangeSpec::From(0), 0), Err(()));
        assert_eq!(content_range(1, 2, 3), "bytes 1-2/3");
    }

    proptest! {
        #[test]
        fn resolved_ranges_are_inside_the_object(a in 0u64..1000, b in 0u64..1000, n in 0u64..1000, len in 0u64..1000) {
            for spec in [RangeSpec::FromTo(a.min(b), a.max(b)), RangeSpec::From(a), RangeSpec::Suffix(n)] {
                if let Ok((f, l)) = resolve(spec, len) {
                    prop_assert!(f <= l && l < len);
                }
            }
        }
    }
}
