//! Multipart uploads at the boundary: upload records, Complete, staged short parts.

use super::*;

/// The authenticated record of upload `u1` of `b/k` (a fresh multipart envelope), and
/// its data key.
pub(super) fn upload_u1_record() -> (String, DataKey) {
    let (env, dek) = multipart_envelope();
    let record = UploadState {
        created: NOW,
        object: state::object_tag("b", "k"),
        envelope: env.encode(),
    }
    .seal("u1", "k1", &[7u8; 32]);
    (record, dek)
}

/// The ETag a client has for part `n` in these tests: the MD5 of its plaintext, here
/// `[n; 16]`.
pub(super) fn plain_etag(n: u32) -> String {
    format!("\"{}\"", hex::encode([n as u8; 16]))
}

/// Records in shared data that part `n` of upload `u1` (plaintext MD5 `md5`) is stored
/// under the backend ETag `backend`, as UploadPart does.
pub(super) fn record_part(store: &MemStore, dek: &DataKey, n: u32, md5: [u8; 16], backend: &str) {
    let e = state::parts::EtagKey::new(Suite::Aes256Gcm, dek)
        .seal("u1", n, backend, &md5, &crate::crypto::OsRandom)
        .unwrap();
    let key = state::parts::shared_key("u1");
    let v = state::parts::shared_with(store.get(&key).as_deref(), n, &e);
    store.set(&key, &v);
}

/// CompleteMultipartUpload of upload `u1` of `b/k` with this part list, its hash signed.
pub(super) fn complete_request(list: &[u8]) -> Headers {
    let hash = hex::encode(Sha256::digest(list));
    let len = list.len().to_string();
    request_with(
        "POST",
        "/b/k?uploadId=u1",
        &[("content-length", len.as_str())],
        &[],
        &hash,
    )
}

/// A Complete body as the filter rebuilds it, before its padding.
pub(super) fn rebuilt(parts: &[(u32, &str)]) -> String {
    let mut x = String::from(
        r#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
    );
    for (n, e) in parts {
        x.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
        ));
    }
    x + "</CompleteMultipartUpload>"
}

/// A sent Complete body without the spaces that pad it to its announced length.
pub(super) fn unpadded(sent: &[u8]) -> String {
    let text = String::from_utf8(sent.to_vec()).unwrap();
    let close = "</CompleteMultipartUpload>";
    let body = text.strip_suffix(close).unwrap();
    format!("{}{close}", body.trim_end_matches(' '))
}

/// CompleteMultipartUpload of a version 2 upload: the part list is held until the parts
/// are listed; a last part that can be followed gets the end part (sealing the listed
/// lengths under the upload's key) and the list sent upstream has exactly the length announced
/// ahead of it; a short part before the last, or a listed part missing, is refused.
#[test]
fn complete_ends_the_object_with_a_final_part() {
    let (record, dek) = upload_u1_record();
    // The client names its parts by their plaintext ETags; the backend knows them as e1, e2.
    let list = format!("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part><Part><PartNumber>2</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>", plain_etag(1), plain_etag(2));
    let list = list.as_bytes();
    let listing = |sizes: &[(u32, u64)]| {
        let mut x = String::from("<ListPartsResult><IsTruncated>false</IsTruncated>");
        for (n, s) in sizes {
            x.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><Size>{s}</Size></Part>"
            ));
        }
        x + "</ListPartsResult>"
    };
    let ok = |status: &str| Headers::from_pairs(vec![(":status".into(), status.into())]);
    let complete = || complete_request(list);
    // Starts a Complete and feeds the list: the call-out it makes (the list is held).
    let start = |ex: &mut Exchange| {
        let up = forwarded(ex.on_request_headers(&complete(), false));
        let announced: usize = up.get("content-length").unwrap().parse().unwrap();
        assert_eq!(announced, list.len() + COMPLETE_ROOM as usize);
        let mut out = Vec::new();
        let call = ex
            .on_request_body(list, true, &mut out)
            .unwrap()
            .expect("held");
        assert!(out.is_empty());
        let path = call
            .headers
            .iter()
            .find(|(k, _)| k == ":path")
            .unwrap()
            .1
            .clone();
        assert!(
            path.starts_with("/b/k?") && path.contains("uploadId=u1"),
            "{path}"
        );
        announced
    };
    let big = crate::format::MIN_PART_SIZE + 10;

    // Last part of 5 MiB or more: the end part, part 3, goes up; then the list with it.
    let store = Rc::new(MemStore::default());
    store.set(&state::shared_key("u1"), record.as_bytes());
    record_part(&store, &dek, 1, [1; 16], "\"e1\"");
    record_part(&store, &dek, 2, [2; 16], "\"e2\"");
    let mut ex = exchange(&store);
    let announced = start(&mut ex);
    let body = listing(&[(2, big), (1, big)]);
    let CallOutStep::Request(RequestStep::CallOut(put)) =
        ex.on_callout_response(Some((&ok("200"), body.as_bytes())))
    else {
        panic!("expected the end marker upload");
    };
    // The end part seals the two parts' plaintext lengths under the upload's key.
    let marker = put.body.clone().unwrap();
    let overhead = crate::format::PART_OVERHEAD;
    assert_eq!(marker.len() as u64, overhead);
    let mut d = crate::format::FrameDecryptor::whole(Suite::Aes256Gcm, &dek, Geometry::end(3));
    let mut sealed = Vec::new();
    d.push(&marker, &mut sealed).unwrap();
    d.finish().unwrap();
    let lengths = crate::format::parse_end_table(&sealed, 2).unwrap();
    assert_eq!(lengths, Some(vec![big - overhead, big - overhead]));
    assert!(put
        .headers
        .iter()
        .any(|(k, v)| k == ":path" && v.contains("partNumber=3")));
    let mut etag = ok("200");
    etag.set("etag", "\"m3\"");
    let CallOutStep::Request(RequestStep::Body(sent)) = ex.on_callout_response(Some((&etag, b"")))
    else {
        panic!("expected the list");
    };
    assert_eq!(sent.len(), announced);
    // The list goes upstream rebuilt from the checked numbers and ETags, the end
    // part's element last, then the spaces the room left.
    assert_eq!(
        unpadded(&sent),
        rebuilt(&[(1, "\"e1\""), (2, "\"e2\""), (3, "\"m3\"")])
    );

    // A short last part is final already: the list goes up padded, nothing uploaded.
    let mut ex = exchange(&store);
    let announced = start(&mut ex);
    let body = listing(&[(1, big), (2, 40_000)]);
    let CallOutStep::Request(RequestStep::Body(sent)) =
        ex.on_callout_response(Some((&ok("200"), body.as_bytes())))
    else {
        panic!("expected the list");
    };
    assert_eq!(sent.len(), announced);
    assert_eq!(unpadded(&sent), rebuilt(&[(1, "\"e1\""), (2, "\"e2\"")]));

    // A short part before the last, a part the backend does not list: refused.
    for (sizes, code) in [
        (vec![(1, 40_000), (2, 40_000)], "EntityTooSmall"),
        (vec![(2, 40_000)], "InvalidPart"),
    ] {
        let mut ex = exchange(&store);
        start(&mut ex);
        let body = listing(&sizes);
        let CallOutStep::Request(RequestStep::Reply(r)) =
            ex.on_callout_response(Some((&ok("200"), body.as_bytes())))
        else {
            panic!("expected a refusal");
        };
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains(code));
    }

    // Pages: part 1 on the first, part 2 on the second; a backend that keeps saying
    // "truncated" without listing the parts gets no more requests than there are parts.
    let page = |parts: &[(u32, u64)], next: Option<u32>| {
        let mut x = listing(parts);
        if let Some(m) = next {
            x = x.replace(
                "<IsTruncated>false</IsTruncated>",
                &format!("<IsTruncated>true</IsTruncated><NextPartNumberMarker>{m}</NextPartNumberMarker>"),
            );
        }
        x
    };
    let mut ex = exchange(&store);
    let announced = start(&mut ex);
    let first = page(&[(1, big)], Some(1));
    let CallOutStep::Request(RequestStep::CallOut(next)) =
        ex.on_callout_response(Some((&ok("200"), first.as_bytes())))
    else {
        panic!("expected the second page");
    };
    assert!(next
        .headers
        .iter()
        .any(|(k, v)| k == ":path" && v.contains("part-number-marker=1")));
    let second = page(&[(2, 40_000)], None);
    let CallOutStep::Request(RequestStep::Body(sent)) =
        ex.on_callout_response(Some((&ok("200"), second.as_bytes())))
    else {
        panic!("expected the list");
    };
    assert_eq!(sent.len(), announced);
    let mut ex = exchange(&store);
    start(&mut ex);
    let mut calls = 0;
    for marker in 1..=50 {
        let empty = page(&[], Some(marker));
        match ex.on_callout_response(Some((&ok("200"), empty.as_bytes()))) {
            CallOutStep::Request(RequestStep::CallOut(_)) => calls += 1,
            CallOutStep::Request(RequestStep::Reply(r)) => {
                assert_eq!(r.status, 400);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(calls < 2, "{calls} more pages asked for");

    // No record for the upload (shared-data mode): 404, nothing listed.
    let empty = Rc::new(MemStore::default());
    let mut ex = exchange(&empty);
    forwarded(ex.on_request_headers(&complete(), false));
    let Err(BodyError::Reply(r)) = ex.on_request_body(list, true, &mut Vec::new()) else {
        panic!("expected 404");
    };
    assert_eq!(r.status, 404);
}

/// A short last part is staged when the backend stored it, and Complete closes the object
/// with it: the closing part (uploaded under the last part's number) holds the same
/// plaintext and seals every part's length, and the list sent upstream names it in the
/// last part's place. A staged copy that is not the listed part (another ETag) is not used: the
/// object completes as listed. Complete's success frees the slot.
#[test]
fn a_short_last_part_is_staged_and_closes_the_object() {
    use crate::format::{parse_end_table, FrameDecryptor, PART_OVERHEAD};
    let (record, dek) = upload_u1_record();
    let store = Rc::new(MemStore::default());
    store.set(&state::shared_key("u1"), record.as_bytes());
    let ok = |status: &str| Headers::from_pairs(vec![(":status".into(), status.into())]);

    // UploadPart 2 of 5,000 bytes: encrypted as it streams, staged once stored
    // (the ciphertext, without its upstream framing).
    let plain: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let h = request_with(
        "PUT",
        "/b/k?partNumber=2&uploadId=u1",
        &[("content-length", "5000")],
        &[],
        sigv4::UNSIGNED_PAYLOAD,
    );
    // (Sent unsigned, so that what goes upstream is the ciphertext as staged; the
    // signed framing is checked in auth::chunked and the harness.)
    let mut ex = exchange_with(
        &store,
        Rc::new(std::cell::Cell::new(NOW)),
        config_with(br#"{"upstream_authority":"backend:9000","upstream_payload":"unsigned"}"#),
    );
    forwarded(ex.on_request_headers(&h, false));
    let mut cipher = Vec::new();
    for c in plain.chunks(1500) {
        let end = c.as_ptr() as usize + c.len() == plain.as_ptr() as usize + plain.len();
        assert!(ex.on_request_body(c, end, &mut cipher).unwrap().is_none());
    }
    assert_eq!(cipher.len() as u64, 5000 + PART_OVERHEAD);
    let md5 = hex::encode(Md5::digest(&cipher));
    let mut stored = ok("200");
    stored.set("etag", format!("\"{md5}\""));
    let ResponseStep::Forward(answered) = ex.on_response_headers(&stored, true) else {
        panic!("expected the answer");
    };
    // The client gets the plaintext's ETag; the entry maps it to the backend's.
    let plain_md5: [u8; 16] = Md5::digest(&plain).into();
    let plain_etag2 = format!("\"{}\"", hex::encode(plain_md5));
    assert_eq!(answered.get("etag"), Some(plain_etag2.as_str()));
    let owners: Vec<_> = (0..8).map(|i| store.get(&stage::owner_key(i))).collect();
    let slot = stage::find_slot(&owners, "u1").expect("staged");
    let rec = store.get(&stage::slot_key(slot)).unwrap();
    assert_eq!(stage::decode(&rec, "u1").unwrap().cipher, cipher);

    record_part(&store, &dek, 1, [1; 16], "\"e1\"");
    let big = crate::format::MIN_PART_SIZE + 10;
    let complete = |last_etag: &str| {
        let list = format!("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part><Part><PartNumber>2</PartNumber><ETag>{plain_etag2}</ETag></Part></CompleteMultipartUpload>", plain_etag(1));
        let h = complete_request(list.as_bytes());
        let mut ex = exchange(&store);
        forwarded(ex.on_request_headers(&h, false));
        let mut out = Vec::new();
        ex.on_request_body(list.as_bytes(), true, &mut out)
            .unwrap()
            .expect("held");
        let listing = format!("<ListPartsResult><IsTruncated>false</IsTruncated><Part><PartNumber>1</PartNumber><ETag>\"e1\"</ETag><Size>{big}</Size></Part><Part><PartNumber>2</PartNumber><ETag>{last_etag}</ETag><Size>{}</Size></Part></ListPartsResult>", cipher.len());
        let step = ex.on_callout_response(Some((&ok("200"), listing.as_bytes())));
        (ex, step)
    };

    // Part 2 uploaded again (the backend's ETag of the newest upload is another than
    // the staged copy's): completes as listed.
    let other = "\"0123456789abcdef0123456789abcdef\"";
    record_part(&store, &dek, 2, plain_md5, other);
    let (_, step) = complete(other);
    let CallOutStep::Request(RequestStep::Body(sent)) = step else {
        panic!("expected the list, got {step:?}");
    };
    assert_eq!(
        unpadded(&sent),
        rebuilt(&[(1, "\"e1\""), (2, "\"0123456789abcdef0123456789abcdef\"")])
    );

    // The staged copy of the listed part: the closing part goes up as part 3.
    record_part(&store, &dek, 2, plain_md5, &format!("\"{md5}\""));
    let (mut ex, step) = complete(&format!("\"{md5}\""));
    let CallOutStep::Request(RequestStep::CallOut(put)) = step else {
        panic!("expected the closing part, got {step:?}");
    };
    assert!(put
        .headers
        .iter()
        .any(|(k, v)| k == ":path" && v.contains("partNumber=2") && v.contains("uploadId=u1")));
    let closing = put.body.clone().unwrap();
    assert_eq!(
        closing.len(),
        cipher.len(),
        "one part overhead, like every part"
    );
    let trailer = (crate::format::CLOSING_SEALED_LEN + crate::format::FRAME_OVERHEAD) as usize;
    let (frames, table) = closing.split_at(closing.len() - trailer);
    let mut d = FrameDecryptor::whole(Suite::Aes256Gcm, &dek, Geometry::closing(2, 5000));
    let mut got = Vec::new();
    d.push(frames, &mut got).unwrap();
    d.finish().unwrap();
    assert_eq!(got, plain);
    let mut t = FrameDecryptor::whole(Suite::Aes256Gcm, &dek, Geometry::closing_table(2));
    let mut sealed = Vec::new();
    t.push(table, &mut sealed).unwrap();
    t.finish().unwrap();
    assert_eq!(
        parse_end_table(&sealed, 2).unwrap(),
        Some(vec![big - PART_OVERHEAD, 5000])
    );
    let mut etag = ok("200");
    etag.set("etag", "\"c3\"");
    let CallOutStep::Request(RequestStep::Body(sent)) = ex.on_callout_response(Some((&etag, b"")))
    else {
        panic!("expected the list");
    };
    assert_eq!(unpadded(&sent), rebuilt(&[(1, "\"e1\""), (2, "\"c3\"")]));
    // The backend completed it: the record and the staged copy are gone.
    let done = Headers::from_pairs(vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/xml".into()),
    ]);
    let _ = ex.on_response_headers(&done, false);
    let mut out = Vec::new();
    let _ = ex.on_response_body(
        b"<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag></CompleteMultipartUploadResult>",
        true,
        &mut out,
    );
    assert!(store.get(&stage::slot_key(slot)).is_none());
    assert!(store.get(&state::shared_key("u1")).is_none());
}
