//! Reads and call-outs at the boundary: part-table caching and sharing, signing times,
//! call-out tokens.

use super::*;
#[allow(unused_imports)]
use multipart::*;

/// A part table cached for one object never serves another that the provider gives the
/// same ETag and stored size: the cache is keyed by the object's wrapped data key too.
#[test]
fn a_cached_part_table_belongs_to_one_object() {
    let ((a, _), (b, _)) = (multipart_envelope(), multipart_envelope());
    let overhead = crate::format::PART_OVERHEAD;
    let table = PartTable::from_end(&[8 << 20, 8 << 20]).unwrap();
    let stored = table.stored_len();
    let etag = "\"e-3\"";
    // Reads part 1 of an object whose HEAD shows `env`: what comes after the HEAD.
    let read = |store: &Rc<MemStore>, env: &Envelope| {
        let mut ex = exchange(store);
        let h = request("GET", "/b/k?partNumber=1", &[], &[]);
        let step = ex.on_request_headers(&h, true);
        let RequestStep::CallOut(_) = step else {
            panic!("expected the HEAD, got {step:?}");
        };
        let head = Headers::from_pairs(vec![
            (":status".into(), "200".into()),
            ("etag".into(), etag.into()),
            ("content-length".into(), stored.to_string()),
            (ENVELOPE_HEADER.into(), env.encode()),
        ]);
        match ex.on_callout_response(Some((&head, b""))) {
            CallOutStep::Request(step) => step,
            other => panic!("unexpected {other:?}"),
        }
    };
    let store = Rc::new(MemStore::default());
    let version = table_version(etag, stored, &a);
    store.set(
        &table_slot(&version),
        format!("{version}\n{}", table.encode()).as_bytes(),
    );
    // A's own read uses the cache (the data read goes upstream at once) …
    let up = forwarded(read(&store, &a));
    let part1 = format!("bytes=16-{}", (8 << 20) + overhead - 1);
    assert_eq!(up.get("range"), Some(part1.as_str()));
    // … B, with A's ETag and size, looks for its own table (its end part).
    let RequestStep::CallOut(c) = read(&store, &b) else {
        panic!("B must not use A's table");
    };
    let range = c
        .headers
        .iter()
        .find(|(k, _)| k == "range")
        .unwrap()
        .1
        .clone();
    assert_eq!(range, format!("bytes={}-{}", stored - overhead, stored - 1));
}

/// Concurrent first readers of one object version share one lookup of its part table:
/// the second waits instead of reading the table itself and is planned from what the
/// first found; when the first reader's lookup ends without a table (it went away), the
/// waiting one is told to retry (503), never given a table of its own making up.
#[test]
fn concurrent_first_readers_share_one_table_lookup() {
    let (env, dek) = multipart_envelope();
    let overhead = crate::format::PART_OVERHEAD;
    let stored = PartTable::from_end(&[8 << 20, 8 << 20])
        .unwrap()
        .stored_len();
    let etag = "\"shared-3\"";
    let head = Headers::from_pairs(vec![
        (":status".into(), "200".into()),
        ("etag".into(), etag.into()),
        ("content-length".into(), stored.to_string()),
        (ENVELOPE_HEADER.into(), env.encode()),
    ]);
    // A range read of part 1 up to its HEAD's answer.
    let start = |store: &Rc<MemStore>| {
        let mut ex = exchange(store);
        let h = request("GET", "/b/k?partNumber=1", &[], &[]);
        let RequestStep::CallOut(_) = ex.on_request_headers(&h, true) else {
            panic!("expected the HEAD");
        };
        let CallOutStep::Request(step) = ex.on_callout_response(Some((&head, b""))) else {
            panic!("expected a request step");
        };
        (ex, step)
    };
    let store = Rc::new(MemStore::default());
    let _ = finished_lookups();
    let (mut first, step) = start(&store);
    let RequestStep::CallOut(read) = step else {
        panic!("the first reader looks the table up, got {step:?}");
    };
    assert!(read
        .headers
        .iter()
        .any(|(k, v)| k == "range" && *v == format!("bytes={}-{}", stored - overhead, stored - 1)));
    let (mut second, step) = start(&store);
    let RequestStep::Wait(version) = step else {
        panic!("the second reader waits, got {step:?}");
    };
    assert_eq!(version, table_version(etag, stored, &env));
    assert!(finished_lookups().is_empty());
    // The first finds the end part's table, caches it and goes on; the second is planned
    // from the cache (the same range upstream), with no request of its own.
    let end = crate::format::seal_end(
        Suite::Aes256Gcm,
        &dek,
        3,
        &[8 << 20, 8 << 20],
        None,
        &crate::crypto::test_rng(),
    )
    .unwrap();
    let partial = Headers::from_pairs(vec![
        (":status".into(), "206".into()),
        ("etag".into(), etag.into()),
    ]);
    let CallOutStep::Request(RequestStep::Forward(up1)) =
        first.on_callout_response(Some((&partial, &end)))
    else {
        panic!("expected the first read to go upstream");
    };
    assert_eq!(finished_lookups(), vec![version.clone()]);
    let up2 = forwarded(second.table_shared());
    let part1 = format!("bytes=16-{}", (8 << 20) + overhead - 1);
    assert_eq!(up1.get("range"), Some(part1.as_str()));
    assert_eq!(up2.get("range"), Some(part1.as_str()));

    // A lookup that ends without a table: the waiting reader is refused with 503.
    let store = Rc::new(MemStore::default());
    let (mut first, _) = start(&store);
    let (mut second, step) = start(&store);
    assert!(matches!(step, RequestStep::Wait(_)));
    first.abandon();
    assert_eq!(finished_lookups().len(), 1);
    let r = replied(second.table_shared());
    assert_eq!(r.status, 503);
    // Nothing in flight now: the next reader looks the table up itself.
    let (_, step) = start(&store);
    assert!(matches!(step, RequestStep::CallOut(_)));
}

/// Every request the filter sends is signed with the time it is sent: a Complete whose
/// parts take 20 minutes to list (a slow backend, 10,000 parts) signs its next request
/// with the later time, not the request's start (S3 refuses a signature more than 15
/// minutes off).
#[test]
fn call_outs_are_signed_when_they_are_sent() {
    let (record, dek) = upload_u1_record();
    let store = Rc::new(MemStore::default());
    store.set(&state::shared_key("u1"), record.as_bytes());
    super::multipart::record_part(&store, &dek, 1, [1; 16], "\"e1\"");
    let clock = Rc::new(std::cell::Cell::new(NOW));
    let mut ex = exchange_at(&store, clock.clone());
    let list = format!("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>", super::multipart::plain_etag(1));
    let list = list.as_bytes();
    let up = forwarded(ex.on_request_headers(&complete_request(list), false));
    assert_eq!(up.get("x-amz-date"), Some(sigv4::amz_date(NOW).as_str()));
    let listing = ex
        .on_request_body(list, true, &mut Vec::new())
        .unwrap()
        .unwrap();
    let date = |c: &CallOut| {
        c.headers
            .iter()
            .find(|(k, _)| k == "x-amz-date")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(date(&listing), Some(sigv4::amz_date(NOW)));
    clock.set(NOW + 20 * 60);
    let big = crate::format::MIN_PART_SIZE + 10;
    let body = format!("<ListPartsResult><IsTruncated>false</IsTruncated><Part><PartNumber>1</PartNumber><Size>{big}</Size></Part></ListPartsResult>");
    let ok = Headers::from_pairs(vec![(":status".into(), "200".into())]);
    let CallOutStep::Request(RequestStep::CallOut(end)) =
        ex.on_callout_response(Some((&ok, body.as_bytes())))
    else {
        panic!("expected the end part's upload");
    };
    assert_eq!(date(&end), Some(sigv4::amz_date(NOW + 20 * 60)));
}

/// A call-out response is taken only with the token of the call-out dispatched for the
/// request's pending state: another token (a response routed to the wrong request) is
/// refused and changes nothing; the right one then goes on.
#[test]
fn call_out_responses_must_carry_their_token() {
    let store = Rc::new(MemStore::default());
    let mut ex = exchange(&store);
    let h = request("GET", "/b/k?partNumber=1", &[], &[]);
    let RequestStep::CallOut(_) = ex.on_request_headers(&h, true) else {
        panic!("expected the HEAD");
    };
    ex.dispatched(7);
    let gone = Headers::from_pairs(vec![(":status".into(), "404".into())]);
    assert!(ex.on_callout_response_with(8, Some((&gone, b""))).is_none());
    assert!(ex.on_callout_response_with(7, Some((&gone, b""))).is_some());
    // Taken once: the same token again is not this request's any more.
    assert!(ex.on_callout_response_with(7, Some((&gone, b""))).is_none());
}

/// A read of part 1 (a range) whose backend answer has a Content-Range start and a Content-Length that
/// add up past u64::MAX is refused as an integrity failure (the sum used to overflow).
#[test]
fn a_range_answer_past_u64_is_refused() {
    let dek = crypto::new_dek(&crate::crypto::OsRandom).unwrap();
    let wrapped = crypto::wrap_dek(config().active_kek().unwrap(), &dek).unwrap();
    let mut env = Envelope::new(Suite::Aes256Gcm, Layout::Single, "k1", wrapped, Some(100));
    env.seal(&dek, &crate::crypto::OsRandom).unwrap();
    let stored = Geometry::single(100).cipher_len().unwrap().to_string();
    let store = Rc::new(MemStore::default());
    let mut ex = exchange(&store);
    let h = request("GET", "/b/k?partNumber=1", &[], &[]);
    let step = ex.on_request_headers(&h, true);
    let RequestStep::CallOut(_) = step else {
        panic!("expected the HEAD, got {step:?}");
    };
    let head = Headers::from_pairs(vec![
        (":status".into(), "200".into()),
        ("content-length".into(), stored.clone()),
        (ENVELOPE_HEADER.into(), env.encode()),
    ]);
    let CallOutStep::Request(RequestStep::Forward(_)) = ex.on_callout_response(Some((&head, b"")))
    else {
        panic!("expected the read to go upstream");
    };
    let resp = Headers::from_pairs(vec![
        (":status".into(), "206".into()),
        ("content-range".into(), format!("bytes 1-127/{stored}")),
        ("content-length".into(), u64::MAX.to_string()),
        (ENVELOPE_HEADER.into(), env.encode()),
    ]);
    let ResponseStep::Forward(out) = ex.on_response_headers(&resp, false) else {
        panic!("expected Forward");
    };
    assert_eq!(out.get(":status"), Some("500"));
}

/// UploadPartCopy of the last bytes of a plaintext source (in a passthrough scope) that
/// the backend says is u64::MAX bytes long reads exactly the range asked for (the end of
/// the chunk to read, its start plus 256 KiB, used to overflow).
#[test]
fn a_copy_range_at_the_end_of_u64_reads_what_it_names() {
    let (record, _) = upload_u1_record();
    let store = Rc::new(MemStore::default());
    store.set(&state::shared_key("u1"), record.as_bytes());
    let cfg =
        config_with(br#"{"upstream_authority":"backend:9000","passthrough_unencrypted":["src"]}"#);
    let mut ex = exchange_with(&store, Rc::new(std::cell::Cell::new(NOW)), cfg);
    let (a, b) = (u64::MAX - 10, u64::MAX - 1);
    let range = format!("bytes={a}-{b}");
    let h = request(
        "PUT",
        "/b/k?partNumber=1&uploadId=u1",
        &[
            ("x-amz-copy-source", "/src/big"),
            ("x-amz-copy-source-range", range.as_str()),
        ],
        &[],
    );
    let RequestStep::CallOut(_) = ex.on_request_headers(&h, true) else {
        panic!("expected the source's HEAD");
    };
    let head = Headers::from_pairs(vec![
        (":status".into(), "200".into()),
        ("etag".into(), "\"src\"".into()),
        ("content-length".into(), u64::MAX.to_string()),
    ]);
    let CallOutStep::Request(RequestStep::CallOut(read)) =
        ex.on_callout_response(Some((&head, b"")))
    else {
        panic!("expected the source's read");
    };
    let asked = read.headers.iter().find(|(k, _)| k == "range");
    assert_eq!(asked.map(|(_, v)| v.as_str()), Some(range.as_str()));
}
