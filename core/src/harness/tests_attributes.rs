//! GetObjectAttributes through the harness: answered by the filter from a HEAD (and the
//! part table), plaintext sizes, the client's parts and checksum, the ETag HEAD shows,
//! paging of parts, errors, and a hostile backend (it never sees `?attributes`).

use super::check::marked;
use super::client::checksum;
use super::drive::SentKind;
use super::*;
use crate::auth::checksum::ChecksumAlgorithm;

const MIB: usize = 1 << 20;
const ALL: &str = "ETag,Checksum,ObjectParts,StorageClass,ObjectSize";

fn attrs(h: &mut Harness, key: &str, want: &str, extra: &[(&str, &str)]) -> ClientResponse {
    let mut r =
        Request::get(&format!("{}?attributes", obj(key))).header("x-amz-object-attributes", want);
    for (k, v) in extra {
        r = r.header(k, v);
    }
    h.send(r)
}

/// No request the backend got since `from` asked it for `?attributes`.
fn never_forwarded(h: &Harness, from: usize) {
    for s in h.sent_since(from) {
        assert!(
            !s.path().contains("attributes"),
            "{:?} {}",
            s.kind,
            s.path()
        );
        assert_ne!(
            s.kind,
            SentKind::Upstream,
            "GetObjectAttributes went upstream"
        );
    }
}

#[test]
fn single_object_attributes_are_the_plaintext_ones() {
    let mut h = Harness::shared(90);
    let data = marked(3 * 65536 + 5, 1);
    let crc = checksum(ChecksumAlgorithm::Crc32, &data);
    let put = h.send(Request::put(&obj("a"), &data).header("x-amz-checksum-crc32", &crc));
    assert_eq!(put.status, 200, "{}", put.text());
    let head = h.head("a");
    let from = h.mark();
    let r = attrs(&mut h, "a", ALL, &[]);
    assert_eq!(r.status, 200, "{:?} {:?}", r, h.world.anomalies);
    never_forwarded(&h, from);
    let etag = head.header("etag").unwrap().trim_matches('"').to_string();
    assert_eq!(r.xml("ETag"), Some(etag));
    assert_eq!(r.xml("ObjectSize"), Some(data.len().to_string()));
    assert_eq!(r.xml("ChecksumCRC32"), Some(crc));
    assert_eq!(r.xml("ChecksumType").as_deref(), Some("FULL_OBJECT"));
    assert_eq!(r.xml("StorageClass").as_deref(), Some("STANDARD"));
    // A single-part object has no ObjectParts.
    assert!(!r.text().contains("ObjectParts"), "{}", r.text());
    assert!(r.header("last-modified").is_some());
    assert_eq!(r.header(crate::format::ENVELOPE_HEADER), None);
    // Only what was asked for.
    let r = attrs(&mut h, "a", "ObjectSize", &[]);
    assert_eq!(r.xml("ObjectSize"), Some(data.len().to_string()));
    assert!(!r.text().contains("ETag") && !r.text().contains("Checksum"));
    h.assert_clean();
}

#[test]
fn multipart_parts_are_the_clients_with_paging() {
    let mut h = Harness::shared(91);
    // Three parts of at least 5 MiB: the filter adds an end part (the backend's ETag is
    // -4), and the ETag clients see is that of their three plaintext parts.
    let p: Vec<Vec<u8>> = (0..3).map(|i| marked(5 * MIB + 10 + i, i as u32)).collect();
    let refs: Vec<&[u8]> = p.iter().map(|v| &v[..]).collect();
    let done = h.multipart("m", &refs);
    assert_eq!(done.status, 200, "{}", done.text());
    let shown = super::check::multipart_md5_etag(&refs);
    assert_eq!(done.xml("ETag"), Some(shown.clone()));
    assert!(h.world.s3.object("m").unwrap().etag.ends_with("-4\""));
    let total: usize = p.iter().map(Vec::len).sum();
    let head = h.head("m");
    let from = h.mark();
    let r = attrs(&mut h, "m", ALL, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    never_forwarded(&h, from);
    assert_eq!(head.header("etag"), Some(shown.as_str()));
    assert_eq!(r.xml("ETag"), Some(shown.trim_matches('"').to_string()));
    assert_eq!(r.xml("ObjectSize"), Some(total.to_string()));
    assert_eq!(r.xml("PartsCount").as_deref(), Some("3"));
    let t = r.text();
    for (i, part) in p.iter().enumerate() {
        let want = format!(
            "<Part><PartNumber>{}</PartNumber><Size>{}</Size></Part>",
            i + 1,
            part.len()
        );
        assert!(t.contains(&want), "{want} in {t}");
    }
    assert!(
        !t.contains("<PartNumber>4</PartNumber>"),
        "the end part is not the client's"
    );
    assert_eq!(r.xml("IsTruncated").as_deref(), Some("false"));
    // Paging: one part at a time.
    let r = attrs(
        &mut h,
        "m",
        "ObjectParts",
        &[("x-amz-max-parts", "1"), ("x-amz-part-number-marker", "1")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    assert!(
        t.contains(&format!(
            "<Part><PartNumber>2</PartNumber><Size>{}</Size></Part>",
            p[1].len()
        )),
        "{t}"
    );
    assert!(
        !t.contains("<PartNumber>1<") && !t.contains("<PartNumber>3<"),
        "{t}"
    );
    assert_eq!(r.xml("IsTruncated").as_deref(), Some("true"));
    assert_eq!(r.xml("NextPartNumberMarker").as_deref(), Some("2"));
    assert_eq!(r.xml("MaxParts").as_deref(), Some("1"));
    assert_eq!(r.xml("PartsCount").as_deref(), Some("3"));
    let r = attrs(
        &mut h,
        "m",
        "ObjectParts",
        &[("x-amz-part-number-marker", "3")],
    );
    assert_eq!(r.xml("IsTruncated").as_deref(), Some("false"));
    assert!(!r.text().contains("<Part>"));
    // Without ObjectParts no part table is needed: one HEAD.
    h.restart(0);
    let from = h.mark();
    let r = attrs(&mut h, "m", "ObjectSize", &[]);
    assert_eq!(r.xml("ObjectSize"), Some(total.to_string()));
    assert_eq!(h.sent_since(from).len(), 1);
    h.assert_clean();
}

#[test]
fn multipart_with_a_closing_part_and_versions() {
    let mut h = Harness::shared(92);
    let p = [marked(5 * MIB + 1, 1), marked(1234, 2)];
    let done = h.multipart("c", &[&p[0], &p[1]]);
    assert_eq!(done.status, 200, "{}", done.text());
    let r = attrs(&mut h, "c", "ObjectParts,ObjectSize", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.xml("PartsCount").as_deref(), Some("2"));
    assert!(r
        .text()
        .contains("<Part><PartNumber>2</PartNumber><Size>1234</Size></Part>"));
    assert_eq!(r.xml("ObjectSize"), Some((p[0].len() + 1234).to_string()));
    // versionId goes to the HEAD (and the table reads) of that version.
    let from = h.mark();
    h.restart(0);
    let r = h.send(
        Request::get(&format!("{}?attributes&versionId=v1", obj("c")))
            .header("x-amz-object-attributes", "ObjectParts"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let calls: Vec<&Sent> = h.sent_since(from).iter().collect();
    assert!(!calls.is_empty());
    for s in calls {
        assert!(s.path().contains("versionId=v1"), "{}", s.path());
    }
}

#[test]
fn errors_are_s3_errors() {
    let mut h = Harness::shared(93);
    h.put("e", b"x");
    let r = attrs(&mut h, "missing", ALL, &[]);
    assert_eq!((r.status, r.code().as_deref()), (404, Some("NoSuchKey")));
    for bad in ["", "Size", "ETag,bogus"] {
        let from = h.mark();
        let r = attrs(&mut h, "e", bad, &[]);
        assert_eq!(
            (r.status, r.code().as_deref()),
            (400, Some("InvalidArgument")),
            "{bad}"
        );
        assert!(h.sent_since(from).is_empty());
    }
    let r = h.send(Request::get(&format!("{}?attributes", obj("e"))));
    assert_eq!(r.status, 400);
    // Unsigned attribute headers are not read.
    let r = h.send(
        Request::get(&format!("{}?attributes", obj("e")))
            .header("x-amz-object-attributes", "ETag")
            .unsigned("x-amz-max-parts", "1"),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // A body is refused.
    let r = h.send(
        Request::new("GET", &format!("{}?attributes", obj("e")))
            .header("x-amz-object-attributes", "ETag")
            .body(b"data"),
    );
    assert_eq!(r.status, 400);
}

/// A hostile provider cannot make GetObjectAttributes show ciphertext sizes or forged
/// ones: a stored object that does not add up is an integrity error, and the backend's
/// own `?attributes` answer is never asked for.
#[test]
fn a_hostile_backend_gets_no_say() {
    let mut h = Harness::shared(94);
    let data = marked(70_000, 3);
    h.put("t", &data);
    // The size no longer fits the envelope.
    let stored = h.world.s3.raw("t");
    h.world.s3.set_raw("t", stored[..stored.len() - 1].to_vec());
    let r = attrs(&mut h, "t", "ObjectSize", &[]);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(!r.text().contains("ObjectSize"));
    // An object without an envelope outside a passthrough scope.
    h.world.s3.put_raw("plain", b"hello".to_vec(), &[]);
    let r = attrs(&mut h, "plain", "ObjectSize", &[]);
    assert_eq!(r.status, 500, "{}", r.text());
    // A backend that would answer ?attributes itself (with ciphertext sizes) is not asked.
    h.world.s3.answer = Some(Box::new(|req: &drive::Http| {
        let p = req.headers.get(":path").unwrap_or("");
        p.contains("attributes").then(|| {
            let mut r = drive::Http::with_status(200);
            r.body = b"<GetObjectAttributesResponse><ObjectSize>1</ObjectSize></GetObjectAttributesResponse>".to_vec();
            r
        })
    }));
    h.put("u", &data);
    let r = attrs(&mut h, "u", "ObjectSize", &[]);
    assert_eq!(r.xml("ObjectSize"), Some(data.len().to_string()));
}
