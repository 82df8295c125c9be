//! Single objects through the harness: PUT/GET/HEAD, ranges, conditions, aws-chunked
//! uploads, digests, presigned URLs, signatures, clock skew, listings, deletes.

use super::check::{check_read, check_upstream, marked};
use super::*;

#[test]
fn smoke() {
    let mut h = Harness::shared(1);
    let data = marked(200_000, 1);
    let r = h.put("k", &data);
    assert_eq!(r.status, 200, "{}", r.text());
    let g = h.get("k");
    assert!(g.ok(), "{g:?}");
    assert_eq!(g.body, data);
    check_read(&g, &data, (0, data.len() - 1)).unwrap();
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}
