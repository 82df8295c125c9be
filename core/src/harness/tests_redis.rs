//! Redis mode (upload state in the fake webdis): parts spread over replicas, Complete on
//! one that never saw the upload, short parts staged in Redis, Redis down or slow (503,
//! nothing half-written), a failed record write, restarts, aborts, TTLs, and whoever can
//! write Redis forging, swapping or replaying upload records.

use super::check::{check_upstream, marked, part_magics};
use super::drive::{Fault, FaultRule};
use super::*;
use crate::ops::Counter;
use crate::state;

const MIB: usize = 1 << 20;

fn create_on(h: &mut Harness, p: usize, key: &str) -> String {
    let r = h.send_on(p, Request::new("POST", &format!("{}?uploads", obj(key))));
    assert_eq!(r.status, 200, "{}", r.text());
    r.xml("UploadId").unwrap()
}

fn part_on(h: &mut Harness, p: usize, key: &str, id: &str, n: u32, data: &[u8]) -> ClientResponse {
    h.send_on(p, Request::put(&part_path(key, id, n), data))
}

fn complete_on(
    h: &mut Harness,
    p: usize,
    key: &str,
    id: &str,
    parts: &[(u32, String)],
) -> ClientResponse {
    h.send_on(
        p,
        Request::post(
            &format!("{}?uploadId={}", obj(key), enc(id)),
            complete_body(parts).as_bytes(),
        ),
    )
}

fn etag(r: &ClientResponse) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("etag").unwrap().to_string()
}

#[test]
fn parts_on_two_replicas_and_complete_on_a_third() {
    let mut h = Harness::redis(70);
    let b = h.add_proxy(Options::redis());
    let c = h.add_proxy(Options::redis());
    let id = create_on(&mut h, 0, "mp");
    let now = h.now();
    assert!(h
        .world
        .webdis
        .live_keys(now)
        .contains(&state::redis_key(&id)));
    let p = [marked(5 * MIB + 1, 1), marked(3000, 2)];
    let e1 = etag(&part_on(&mut h, 0, "mp", &id, 1, &p[0]));
    // Replica b never saw the upload: it reads the record from Redis (and stages the
    // short last part there).
    let e2 = etag(&part_on(&mut h, b, "mp", &id, 2, &p[1]));
    assert!(h
        .world
        .webdis
        .live_keys(now)
        .contains(&crate::state::stage::redis_key(&id)));
    let r = complete_on(&mut h, c, "mp", &id, &[(1, e1), (2, e2)]);
    assert_eq!(r.status, 200, "{}", r.text());
    // Closed with the part staged in Redis by another replica.
    assert_eq!(part_magics(&h, "mp"), ["s3cP", "s3cC"]);
    assert_eq!(h.send_on(0, Request::get(&obj("mp"))).body, p.concat());
    assert_eq!(
        h.send_on(b, Request::get(&obj("mp")).header("range", "bytes=-10"))
            .body,
        p[1][2990..]
    );
    // Both keys were removed once the backend completed the upload.
    assert!(
        h.world.webdis.live_keys(h.now()).is_empty(),
        "{:?}",
        h.world.webdis.keys()
    );
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn redis_down_gives_503_nothing_half_written_and_a_retry_succeeds() {
    let mut h = Harness::redis(71);
    let b = h.add_proxy(Options::redis());
    let committed = marked(300_000, 70);
    h.put("committed", &committed);
    let id = create_on(&mut h, 0, "down");
    let p = [marked(5 * MIB, 71), marked(3 * MIB, 72)];
    let e1 = etag(&part_on(&mut h, 0, "down", &id, 1, &p[0]));
    h.world
        .faults
        .push(FaultRule::callouts("redis_webdis", Fault::Fail));
    let r = part_on(&mut h, b, "down", &id, 2, &p[1]);
    assert_eq!(
        (r.status, r.code().as_deref()),
        (503, Some("ServiceUnavailable")),
        "{}",
        r.text()
    );
    let r = h.send_on(
        b,
        Request::new("POST", &format!("{}?uploads", obj("down2"))),
    );
    assert_eq!(r.status, 503);
    assert_eq!(h.world.s3.uploads.len(), 1, "no upload was created");
    assert_eq!(
        h.world.s3.uploads[&id]
            .parts
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [1]
    );
    // Single objects and completed objects do not need Redis.
    assert_eq!(
        h.send_on(b, Request::put(&obj("single"), b"still works"))
            .status,
        200
    );
    assert_eq!(
        h.send_on(b, Request::get(&obj("single"))).body,
        b"still works"
    );
    assert_eq!(
        h.send_on(b, Request::get(&obj("committed"))).body,
        committed
    );
    h.world.faults.clear();
    let e2 = etag(&part_on(&mut h, b, "down", &id, 2, &p[1]));
    assert_eq!(
        complete_on(&mut h, b, "down", &id, &[(1, e1), (2, e2)]).status,
        200
    );
    assert_eq!(h.get("down").body, p.concat());
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn an_unresponsive_redis_times_out_with_503() {
    let mut h = Harness::redis(72);
    let id = create_on(&mut h, 0, "slow");
    let b = h.add_proxy(Options::redis());
    h.world
        .faults
        .push(FaultRule::callouts("redis_webdis", Fault::Delay(5000)));
    let t0 = h.now();
    let r = part_on(&mut h, b, "slow", &id, 1, &[1u8; 1000]);
    assert_eq!(r.status, 503);
    let waited = h.now() - t0;
    assert!(
        (1..5).contains(&waited),
        "waited {waited} s: the call-out's timeout, not the delay"
    );
    h.assert_clean();
}

#[test]
fn a_record_that_cannot_be_written_withholds_the_upload_id() {
    let mut h = Harness::redis(73);
    h.world.faults.push(
        FaultRule::callouts("redis_webdis", Fault::Fail)
            .path("/SETEX/")
            .times(1),
    );
    let r = h.send(Request::new("POST", &format!("{}?uploads", obj("k"))));
    // The headers went out; the body with the UploadId was held for the record and
    // dropped with the reset.
    assert!(r.reset && !r.complete() && r.body.is_empty(), "{r:?}");
    // The backend's upload exists but the client never learnt its id (a lifecycle rule
    // removes it); with Redis answering again, uploads work.
    assert_eq!(h.world.s3.uploads.len(), 1);
    let id = create_on(&mut h, 0, "k");
    let e = etag(&part_on(&mut h, 0, "k", &id, 1, b"x"));
    assert_eq!(complete_on(&mut h, 0, "k", &id, &[(1, e)]).status, 200);
    h.assert_clean();
}

#[test]
fn restarts_aborts_and_ttls() {
    let mut h = Harness::redis(74);
    let b = h.add_proxy(Options::redis());
    // A restart between parts: shared data (the per-pod cache) is gone, Redis is not.
    let id = create_on(&mut h, 0, "rs");
    let p = [marked(5 * MIB, 80), marked(100_000, 81)];
    let e1 = etag(&part_on(&mut h, 0, "rs", &id, 1, &p[0]));
    h.restart(0);
    let e2 = etag(&part_on(&mut h, 0, "rs", &id, 2, &p[1]));
    assert_eq!(
        complete_on(&mut h, 0, "rs", &id, &[(1, e1), (2, e2)]).status,
        200
    );
    assert_eq!(h.get("rs").body, p.concat());
    // An abort on another replica removes the record.
    let id = create_on(&mut h, 0, "ab");
    assert_eq!(
        h.send_on(
            b,
            Request::new("DELETE", &format!("{}?uploadId={}", obj("ab"), enc(&id)))
        )
        .status,
        204
    );
    assert!(h.world.webdis.live_keys(h.now()).is_empty());
    assert_eq!(
        part_on(&mut h, b, "ab", &id, 1, b"x").code().as_deref(),
        Some("NoSuchUpload")
    );
    // Replica 0 still caches the record: the backend, which no longer has the upload, refuses.
    assert_eq!(part_on(&mut h, 0, "ab", &id, 1, b"x").status, 404);
    // Past the TTL the record is gone from Redis and refused from the cache.
    let id = create_on(&mut h, 0, "ttl");
    etag(&part_on(&mut h, 0, "ttl", &id, 1, b"early"));
    h.advance(7 * 86_400 + 10);
    let fresh = h.add_proxy(Options::redis());
    for p in [fresh, 0] {
        assert_eq!(
            part_on(&mut h, p, "ttl", &id, 2, b"late").code().as_deref(),
            Some("NoSuchUpload"),
            "{p}"
        );
    }
    h.assert_clean();
}

#[test]
fn forged_swapped_and_replayed_records_are_refused() {
    let mut h = Harness::redis(75);
    let victim = create_on(&mut h, 0, "victim");
    let mine = create_on(&mut h, 0, "mine");
    let rec = |h: &Harness, id: &str| h.world.webdis.get_raw(&state::redis_key(id)).unwrap();
    let (victim_rec, mine_rec) = (rec(&h, &victim), rec(&h, &mine));
    assert!(victim_rec.starts_with("2\n") && mine_rec.starts_with("2\n"));
    let f: Vec<&str> = mine_rec.split('\n').collect();
    let v_env = victim_rec.split('\n').nth(4).unwrap();
    let (key_id, created, object, env, mac) = (f[1], f[2], f[3], f[4], f[5]);
    let forged = [
        victim_rec.clone(), // swapped in from another upload
        ["2", key_id, created, object, v_env, mac].join("\n"), // another envelope, old MAC
        [
            "2",
            key_id,
            &(created.parse::<i64>().unwrap() + 1).to_string(),
            object,
            env,
            mac,
        ]
        .join("\n"), // another time
        ["1", created, object, v_env].join("\n"), // version 1: no MAC
        [
            "2",
            key_id,
            created,
            &state::object_tag(BUCKET, "victim"),
            env,
            mac,
        ]
        .join("\n"), // another object
    ];
    for (n, bad) in forged.iter().enumerate() {
        // A fresh replica has no cached copy: it reads what is in Redis.
        let fresh = h.add_proxy(Options::redis());
        h.world.webdis.set_raw(&state::redis_key(&mine), bad);
        let r = part_on(&mut h, fresh, "mine", &mine, 1, b"chosen plaintext");
        assert_eq!(
            r.code().as_deref(),
            Some("NoSuchUpload"),
            "{n}: {}",
            r.text()
        );
        if n < 4 {
            assert!(
                h.proxies[fresh].counter(Counter::IntegrityFailures) >= 1,
                "{n}"
            );
        }
        // Complete and UploadPartCopy read the record too.
        let r = complete_on(&mut h, fresh, "mine", &mine, &[(1, "\"x\"".into())]);
        assert_eq!(r.code().as_deref(), Some("NoSuchUpload"), "{n}");
    }
    assert!(h.world.s3.uploads[&mine].parts.is_empty());
    // The genuine record still works.
    h.world.webdis.set_raw(&state::redis_key(&mine), &mine_rec);
    let fresh = h.add_proxy(Options::redis());
    etag(&part_on(&mut h, fresh, "mine", &mine, 1, b"genuine"));
    // In shared data too a record is bound to its UploadId: another upload's record
    // copied under this one's key is refused.
    let mut s = Harness::shared(75);
    let u1 = s.create_upload("a");
    let u2 = s.create_upload("a");
    let r1 = s.proxy().store.get(&state::shared_key(&u1)).unwrap();
    s.proxy()
        .store
        .0
        .borrow_mut()
        .insert(state::shared_key(&u2), r1);
    assert_eq!(
        s.upload_part("a", &u2, 1, b"x").code().as_deref(),
        Some("NoSuchUpload")
    );
    assert_eq!(s.upload_part("a", &u1, 1, b"x").status, 200);
    h.assert_clean();
}

#[test]
fn abort_of_another_key_on_a_replica_without_the_record() {
    let mut h = Harness::redis(76);
    let id = create_on(&mut h, 0, "mine");
    let fresh = h.add_proxy(Options::redis());
    let m = h.mark();
    let r = h.send_on(
        fresh,
        Request::new("DELETE", &format!("{}?uploadId={}", obj("other"), enc(&id))),
    );
    assert_eq!(r.code().as_deref(), Some("NoSuchUpload"));
    assert!(
        h.sent_since(m).iter().all(|s| s.method() != "DELETE"),
        "the backend was not asked"
    );
    etag(&part_on(&mut h, 0, "mine", &id, 1, b"still here"));
    let fresh = h.add_proxy(Options::redis());
    assert_eq!(
        h.send_on(
            fresh,
            Request::new("DELETE", &format!("{}?uploadId={}", obj("mine"), enc(&id)))
        )
        .status,
        204
    );
    assert!(h.world.webdis.live_keys(h.now()).is_empty());
    assert!(h.world.s3.uploads.is_empty());
    h.assert_clean();
}

#[test]
fn upload_part_copy_on_another_replica() {
    let mut h = Harness::redis(77);
    let b = h.add_proxy(Options::redis());
    let src = marked(5 * MIB + 77, 70);
    h.put("src", &src);
    let id = create_on(&mut h, 0, "dst");
    let copy = |n: u32, range: Option<&str>| {
        let mut r =
            Request::new("PUT", &part_path("dst", &id, n)).header("x-amz-copy-source", "/b/src");
        if let Some(range) = range {
            r = r.header("x-amz-copy-source-range", range);
        }
        r
    };
    h.world
        .faults
        .push(FaultRule::callouts("redis_webdis", Fault::Fail));
    assert_eq!(h.send_on(b, copy(1, None)).status, 503);
    h.world.faults.clear();
    let e1 = h.send_on(b, copy(1, None)).xml("ETag").unwrap();
    let e2 = h
        .send_on(0, copy(2, Some("bytes=10-99")))
        .xml("ETag")
        .unwrap();
    assert_eq!(
        complete_on(&mut h, b, "dst", &id, &[(1, e1), (2, e2)]).status,
        200
    );
    assert_eq!(
        h.send_on(0, Request::get(&obj("dst"))).body,
        [&src[..], &src[10..100]].concat()
    );
    check_upstream(&h, 0).unwrap();
    h.assert_clean();
}

#[test]
fn a_lost_staged_part_completes_without_a_table() {
    let mut h = Harness::redis(78);
    let id = create_on(&mut h, 0, "lost");
    let p = [marked(5 * MIB + 3, 1), marked(4000, 2)];
    let e1 = etag(&part_on(&mut h, 0, "lost", &id, 1, &p[0]));
    let e2 = etag(&part_on(&mut h, 0, "lost", &id, 2, &p[1]));
    // Someone with access to Redis drops (or rewrites) the staged copy.
    h.world
        .webdis
        .set_raw(&crate::state::stage::redis_key(&id), "garbage");
    assert_eq!(
        complete_on(&mut h, 0, "lost", &id, &[(1, e1), (2, e2)]).status,
        200
    );
    assert_eq!(part_magics(&h, "lost"), ["s3cP", "s3cF"]);
    let data = p.concat();
    assert_eq!(
        h.get_range("lost", "bytes=-10").body,
        data[data.len() - 10..]
    );
    assert_eq!(h.get("lost").body, data);
    h.assert_clean();
}

#[test]
fn a_staged_copy_that_is_not_the_listed_part_is_not_used() {
    // Part 2 is uploaded twice, the second time through a replica that does not stage:
    // the staged copy is the first upload's, the list names the second. The object
    // completes as listed (ending with the client's final part), holding the second.
    let mut h = Harness::redis(79);
    let nostage = h.add_proxy(Options::redis().with("stage_short_parts", false.into()));
    let id = create_on(&mut h, 0, "s");
    let p1 = marked(5 * MIB + 1, 1);
    let (first, second) = (marked(3000, 2), marked(3000, 3));
    let e1 = etag(&part_on(&mut h, 0, "s", &id, 1, &p1));
    etag(&part_on(&mut h, 0, "s", &id, 2, &first));
    let e2 = etag(&part_on(&mut h, nostage, "s", &id, 2, &second));
    assert_eq!(
        complete_on(&mut h, 0, "s", &id, &[(1, e1), (2, e2)]).status,
        200
    );
    assert_eq!(part_magics(&h, "s"), ["s3cP", "s3cF"]);
    assert_eq!(h.get("s").body, [p1, second].concat());
    h.assert_clean();
}

#[test]
fn parts_use_the_uploads_suite_on_a_replica_of_the_other_suite() {
    for creator_chacha in [false, true] {
        let chacha = Options::redis().with("suite", "chacha20-poly1305".into());
        let (first, other) = if creator_chacha {
            (chacha, Options::redis())
        } else {
            (Options::redis(), chacha)
        };
        let mut h = Harness::new(first, 80);
        let b = h.add_proxy(other);
        let p = [
            marked(5 * MIB + 1, 61),
            marked(5 * MIB + 1, 62),
            marked(999, 63),
        ];
        let id = create_on(&mut h, 0, "x");
        let mut etags = Vec::new();
        for (n, d) in (1u32..).zip(&p) {
            let on = if n == 2 { 0 } else { b };
            etags.push((n, etag(&part_on(&mut h, on, "x", &id, n, d))));
        }
        assert_eq!(complete_on(&mut h, b, "x", &id, &etags).status, 200);
        let env = h
            .world
            .s3
            .object("x")
            .unwrap()
            .meta(crate::format::ENVELOPE_HEADER)
            .unwrap()
            .to_string();
        assert!(
            env.contains(if creator_chacha { ";s=2;" } else { ";s=1;" }),
            "{env}"
        );
        // Every part decrypts under the upload's envelope (its suite).
        check_upstream(&h, 0).unwrap();
        let data = p.concat();
        for on in [0, b] {
            assert_eq!(h.send_on(on, Request::get(&obj("x"))).body, data);
            assert_eq!(
                h.send_on(on, Request::get(&format!("{}?partNumber=1", obj("x"))))
                    .body,
                p[0]
            );
        }
        h.assert_clean();
    }
}

#[test]
fn a_record_replayed_after_its_upload_ended_stores_nothing() {
    let mut h = Harness::redis(81);
    for end in ["abort", "complete"] {
        let id = create_on(&mut h, 0, "r");
        let saved = h.world.webdis.get_raw(&state::redis_key(&id)).unwrap();
        let e = etag(&part_on(&mut h, 0, "r", &id, 1, b"first"));
        if end == "abort" {
            assert_eq!(
                h.send_on(
                    0,
                    Request::new("DELETE", &format!("{}?uploadId={}", obj("r"), enc(&id)))
                )
                .status,
                204
            );
        } else {
            assert_eq!(complete_on(&mut h, 0, "r", &id, &[(1, e)]).status, 200);
        }
        assert!(h.world.webdis.get_raw(&state::redis_key(&id)).is_none());
        // Whoever kept the record puts it back: it is genuine (same UploadId, in its TTL),
        // so a fresh replica forwards the part, and the backend, whose upload has ended,
        // refuses it. Nothing is stored, nothing overwritten.
        h.world.webdis.set_raw(&state::redis_key(&id), &saved);
        let fresh = h.add_proxy(Options::redis());
        let before = h.world.s3.object("r").cloned();
        let r = part_on(&mut h, fresh, "r", &id, 2, b"replayed");
        assert_eq!(
            r.code().as_deref(),
            Some("NoSuchUpload"),
            "{end}: {}",
            r.text()
        );
        assert_eq!(h.world.s3.object("r").cloned(), before, "{end}");
        let r = complete_on(&mut h, fresh, "r", &id, &[(1, "\"x\"".into())]);
        assert!(r.status == 404 || r.status == 400, "{end}: {}", r.text());
        assert_eq!(h.world.s3.object("r").cloned(), before, "{end}");
    }
    h.assert_clean();
}
