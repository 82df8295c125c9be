"""A hostile storage provider that edits stored files: multipart objects cut or rearranged
while the backend keeps (or forges) their `-N` ETag. These run on s3s-fs, which stores
each object as a plain file with its ETag in a metadata file next to it, so the test can
change bytes without the part boundaries or ETag changing: a provider no S3 API can
imitate (RGW recomputes ETags and part boundaries on every write; the API-level attacks
on RGW are in test_e2e_provider.py, test_e2e_multipart.py and test_e2e_objects.py)."""

import pytest


pytestmark = pytest.mark.backend("s3s-fs")


TRUNCATIONS = ["inside-frame", "whole-frames", "frame-boundary-of-5-MiB-part", "most-of-last-part",
               "whole-end-marker", "whole-last-part"]


@pytest.mark.parametrize("cut", TRUNCATIONS)
def test_truncated_multipart_object_never_looks_complete(stack, bucket, cut):
    """(On s3s-fs: it lets the test cut bytes of a multipart object's stored file while
    the backend keeps reporting its `-N` ETag, a provider no S3 API can imitate; RGW
    recomputes ETags and part boundaries on every write.)
    The provider cuts the tail of a multipart object's stored file (nothing else). The
    Content-Length the filter can compute shrinks with it, so a whole GET holds back the
    last promised byte until the stream verified (the client gets a verified prefix of the
    true object, short of what was announced, then a reset), and range and part reads find
    no consistent part table: every read form fails, releasing only true prefixes."""
    from test_e2e_multipart import MiB, PART_OVERHEAD, upload_parts
    from test_e2e_objects import pattern

    s3 = stack.s3()
    # A 5 MiB last part can be followed, so the filter ends that object with an empty end
    # marker; a 10,000-byte last part is itself the final part.
    big_last = cut in ("whole-frames", "frame-boundary-of-5-MiB-part", "whole-end-marker")
    parts = {1: pattern(5 * MiB, 90), 2: pattern(5 * MiB if big_last else 10_000, 91)}
    data = parts[1] + parts[2]
    upload_parts(s3, bucket, "t", parts)
    path = stack.backend_object_path(bucket, "t")
    stored = path.read_bytes()
    assert len(stored) == len(data) + (3 if big_last else 2) * PART_OVERHEAD
    frame = -(-len(parts[2]) // 1024) + 28  # stored length of one frame of part 2
    marker = PART_OVERHEAD if big_last else 0
    n = {"inside-frame": 5000, "whole-frames": marker + 3 * frame,
         "frame-boundary-of-5-MiB-part": marker + 1, "most-of-last-part": len(parts[2]),
         "whole-end-marker": marker, "whole-last-part": len(parts[2]) + PART_OVERHEAD}[cut]
    path.write_bytes(stored[:-n])
    before = stack.counter("s3crypt_integrity_failures")
    for form, params, want in [
        ("whole", {}, data),
        ("range", {"Range": f"bytes={5 * MiB - 10}-{5 * MiB + 10}"}, data[5 * MiB - 10:5 * MiB + 11]),
        ("suffix", {"Range": "bytes=-100"}, data[-100:]),
        ("part 1", {"PartNumber": 1}, parts[1]),
        ("part 2", {"PartNumber": 2}, parts[2]),
    ]:
        status, got, complete = read_all(stack, bucket, "t", **params)
        assert not (status in (200, 206) and complete), (form, cut, len(got))
        assert status >= 400 or got == want[:len(got)], (form, cut, "only a true prefix")
        if form == "whole":
            assert status == 200 and len(got) < len(data)
    assert stack.counter("s3crypt_integrity_failures") > before


def read_all(envoy, bucket, key, **params):
    """A raw GET (range as `Range=`, or `PartNumber=`): (status, bytes, complete)."""
    range_ = params.pop("Range", None)
    if range_:
        # A presigned URL signs only host, and the filter ignores unsigned headers: the
        # Range goes in a header-signed request.
        import http.client

        import s3util
        creds = getattr(envoy, "stack", envoy).client_creds
        try:
            status, headers, body = s3util.signed_request(
                envoy.endpoint, s3util.Signer(*creds), "GET", f"/{bucket}/{key}", headers={"range": range_})
        except (http.client.HTTPException, ConnectionError):
            return 0, b"", False
        complete = "content-length" in headers and len(body) == int(headers["content-length"])
        return status, body, complete
    from test_e2e_objects import read_all_or_error

    status, got, complete = read_all_or_error(envoy, bucket, key, **params)
    return status or 0, got, complete


def set_backend_etag(stack, bucket, key, etag):
    """Rewrites the ETag s3s-fs reports for an object (its internal metadata file)."""
    import base64
    import json
    import pathlib

    b64 = lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")  # noqa: E731
    [path] = [p for p in pathlib.Path(stack.data_dir).glob(f".bucket-{b64(bucket)}.object-{b64(key)}.internal.json")]
    meta = json.loads(path.read_text())
    meta["e_tag"] = etag
    path.write_text(json.dumps(meta))


MP_TAMPERS = ["swap", "duplicate", "drop-middle", "drop-middle-and-rewrite-etag", "drop-last-and-rewrite-etag",
              "drop-end-part-and-rewrite-etag", "foreign-end-part", "shift-by-rewritten-headers", "append-a-part"]


@pytest.mark.parametrize("tamper", MP_TAMPERS)
def test_tampered_multipart_object_releases_only_a_true_prefix(stack, bucket, tamper):
    """(On s3s-fs: the test edits the stored file and the ETag s3s-fs reports, so that
    parts move without their boundaries or `-N` count changing, or with a forged count;
    through RGW's API a provider can only store whole new parts.)
    The provider rearranges the stored parts of a multipart object (and, where said,
    rewrites the reported ETag to match). Every read form that touches a part not where
    the client put it fails, and whatever a read released is a true prefix of what it
    asked for. (A read of part 3 of an object whose parts 1 and 2 were swapped, same total
    size, uses the sealed part table and reads only part 3, which is genuine and in its
    place: it returns exactly the client's bytes, which is correct.)"""
    from test_e2e_multipart import MiB, PART_OVERHEAD, upload_parts
    from test_e2e_objects import pattern

    s3 = stack.s3()
    # Part 1 longer than part 2, so that a part moved to another slot changes offsets;
    # the third part is 10,000 bytes (a final part) or, for the end-part cases, 5 MiB
    # (then the filter adds part 4, the end part, which seals the part table).
    marked = tamper in ("drop-end-part-and-rewrite-etag", "foreign-end-part")
    parts = {1: pattern(5 * MiB + 4096, 95), 2: pattern(5 * MiB, 96), 3: pattern(5 * MiB if marked else 10_000, 97)}
    data = parts[1] + parts[2] + parts[3]
    upload_parts(s3, bucket, "mp", parts)
    path = stack.backend_object_path(bucket, "mp")
    stored = path.read_bytes()
    n1, n2 = len(parts[1]) + PART_OVERHEAD, len(parts[2]) + PART_OVERHEAD
    s1, s2, s3_ = stored[:n1], stored[n1:n1 + n2], stored[n1 + n2:]
    etag = stack.backend_s3().head_object(Bucket=bucket, Key="mp")["ETag"].strip('"')
    assert etag.endswith("-4" if marked else "-3")
    # Part 1 again in part 2's slot, its header rewritten to say "part 2": a walk of the
    # headers alone would place part 3 4 KiB too far and release its bytes there.
    relabelled = s1[:4] + (2).to_bytes(4, "big") + s1[8:]
    foreign = b""
    if tamper == "foreign-end-part":
        # The end part of another object with the same part sizes (another data key).
        upload_parts(s3, bucket, "other", {n: pattern(len(p), 99) for n, p in parts.items()})
        foreign = stack.backend_object_path(bucket, "other").read_bytes()[-PART_OVERHEAD:]
    new = {"swap": s2 + s1 + s3_, "duplicate": s1 + s1 + s3_, "drop-middle": s1 + s3_,
           "drop-middle-and-rewrite-etag": s1 + s3_, "drop-last-and-rewrite-etag": s1 + s2,
           "drop-end-part-and-rewrite-etag": stored[:-PART_OVERHEAD],
           "foreign-end-part": stored[:-PART_OVERHEAD] + foreign,
           "shift-by-rewritten-headers": s1 + relabelled + s3_,
           "append-a-part": stored + s2}[tamper]
    path.write_bytes(new)
    if tamper.endswith("rewrite-etag"):
        set_backend_etag(stack, bucket, "mp", etag.rsplit("-", 1)[0] + ("-3" if marked else "-2"))
    if tamper == "append-a-part":
        set_backend_etag(stack, bucket, "mp", etag.rsplit("-", 1)[0] + "-4")
    failures = []
    p3 = len(parts[1]) + len(parts[2])
    for form, params, want in [
        ("whole", {}, data),
        ("range", {"Range": f"bytes={5 * MiB - 10}-{5 * MiB + 10}"}, data[5 * MiB - 10:5 * MiB + 11]),
        ("range in part 3", {"Range": f"bytes={p3 + 5}-{p3 + 50}"}, data[p3 + 5:p3 + 51]),
        ("suffix", {"Range": "bytes=-100"}, data[-100:]),
        ("part 2", {"PartNumber": 2}, parts[2]),
        ("part 3", {"PartNumber": 3}, parts[3]),
    ]:
        status, got, complete = read_all(stack, bucket, "mp", **params)
        ok_read = status in (200, 206) and complete
        if ok_read and tamper == "swap" and form in ("range in part 3", "suffix", "part 3"):
            assert got == want, form
        elif ok_read:
            failures.append(form)
        assert got == want[:len(got)] or status >= 400, (form, status, len(got))
    assert failures == [], f"reads that succeeded on a tampered object: {failures}"
