//! Small, strict XML rewriting for S3 response bodies: plaintext sizes in listings and
//! ETags in copy results. Everything not rewritten is kept byte for byte.

use crate::s3::error::{xml_escape, S3Error};

fn malformed() -> S3Error {
    S3Error::internal("s3crypt: malformed XML from the backend")
}

/// Unescapes XML character data (the five entities and numeric references).
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(rest.get(..i).unwrap_or(""));
        let tail = rest.get(i..).unwrap_or("");
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let ent = tail.get(1..end).unwrap_or("");
        let c = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => e
                .get(2..)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32),
            e if e.starts_with('#') => e
                .get(1..)
                .and_then(|d| d.parse().ok())
                .and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(tail.get(..=end).unwrap_or("")),
        }
        rest = tail.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Byte range of the text of the first `<name>` child within `s[from..to]` (no nesting
/// of same-named elements in S3 responses).
fn child_text(s: &str, from: usize, to: usize, name: &str) -> Option<(usize, usize)> {
    let hay = s.get(from..to)?;
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let a = hay.find(&open)? + open.len();
    let b = hay.get(a..)?.find(&close)? + a;
    Some((from + a, from + b))
}

/// Rewrites `<Size>` of every `<Contents>`, `<Version>` and `<Part>` entry with
/// `map(size, etag)` where it returns `Some`.
pub fn rewrite_sizes(
    xml: &str,
    map: &mut dyn FnMut(u64, &str) -> Option<u64>,
) -> Result<String, S3Error> {
    let mut out = String::with_capacity(xml.len());
    let mut pos = 0;
    loop {
        // The next entry of any of the three kinds.
        let next = ["Contents", "Version", "Part"]
            .iter()
            .filter_map(|t| {
                xml.get(pos..)
                    .and_then(|r| r.find(&format!("<{t}>")))
                    .map(|i| (pos + i, *t))
            })
            .min_by_key(|(i, _)| *i);
        let Some((start, tag)) = next else { break };
        let close = format!("</{tag}>");
        let end = xml
            .get(start..)
            .and_then(|r| r.find(&close))
            .map(|i| start + i)
            .ok_or_else(malformed)?;
        let body_start = start + tag.len() + 2;
        out.push_str(xml.get(pos..body_start).ok_or_else(malformed)?);
        let etag = child_text(xml, body_start, end, "ETag")
            .map(|(a, b)| unescape(xml.get(a..b).unwrap_or("")))
            .unwrap_or_default();
        match child_text(xml, body_start, end, "Size") {
            Some((a, b)) => {
                let text = xml.get(a..b).ok_or_else(malformed)?;
                let size: u64 = text.trim().parse().map_err(|_| malformed())?;
                out.push_str(xml.get(body_start..a).ok_or_else(malformed)?);
                match map(size, &etag) {
                    Some(n) => out.push_str(&n.to_string()),
                    None => out.push_str(text),
                }
                out.push_str(xml.get(b..end).ok_or_else(malformed)?);
            }
            None => out.push_str(xml.get(body_start..end).ok_or_else(malformed)?),
        }
        pos = end;
    }
    out.push_str(xml.get(pos..).ok_or_else(malformed)?);
    Ok(out)
}

/// What a listing entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// `<Contents>` (ListObjects v1, v2).
    Contents,
    /// `<Version>` (ListObjectVersions).
    Version,
    /// `<DeleteMarker>` (ListObjectVersions).
    DeleteMarker,
    /// `<CommonPrefixes>`.
    Prefix,
}

/// One entry of a listing, with the byte ranges of what may be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub kind: EntryKind,
    /// The whole element, tags included.
    pub span: (usize, usize),
    /// `<Key>` (or a common prefix's `<Prefix>`), unescaped (still URL-encoded if the
    /// listing was asked for with `encoding-type=url`).
    pub key: String,
    pub version_id: Option<String>,
    /// `<ETag>`, unescaped, and the range of its text.
    pub etag: String,
    pub etag_span: Option<(usize, usize)>,
    pub size: Option<u64>,
    pub size_span: Option<(usize, usize)>,
}

/// The entries of a listing (ListObjects v1 and v2, ListObjectVersions) in document
/// order, found in one pass.
pub fn listing_entries(xml: &str) -> Result<Vec<ListEntry>, S3Error> {
    const KINDS: [(&str, EntryKind); 4] = [
        ("Contents", EntryKind::Contents),
        ("Version", EntryKind::Version),
        ("DeleteMarker", EntryKind::DeleteMarker),
        ("CommonPrefixes", EntryKind::Prefix),
    ];
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = xml.get(pos..).and_then(|r| r.find('<')) {
        let at = pos + i;
        let rest = xml.get(at + 1..).unwrap_or("");
        let Some(&(tag, kind)) = KINDS.iter().find(|(t, _)| {
            rest.starts_with(t) && rest.get(t.len()..).is_some_and(|r| r.starts_with('>'))
        }) else {
            pos = at + 1;
            continue;
        };
        let body = at + tag.len() + 2;
        let close = format!("</{tag}>");
        let end = xml
            .get(body..)
            .and_then(|r| r.find(&close))
            .map(|j| body + j)
            .ok_or_else(malformed)?;
        let text = |name: &str| {
            child_text(xml, body, end, name)
                .map(|(a, b)| (a, b, unescape(xml.get(a..b).unwrap_or(""))))
        };
        let key_name = if kind == EntryKind::Prefix {
            "Prefix"
        } else {
            "Key"
        };
        let key = text(key_name).map(|t| t.2).unwrap_or_default();
        let etag = text("ETag");
        let size = match text("Size") {
            Some((a, b, t)) => Some((a, b, t.trim().parse::<u64>().map_err(|_| malformed())?)),
            None => None,
        };
        out.push(ListEntry {
            kind,
            span: (at, end + close.len()),
            key,
            version_id: text("VersionId").map(|t| t.2),
            etag: etag.as_ref().map(|t| t.2.clone()).unwrap_or_default(),
            etag_span: etag.map(|(a, b, _)| (a, b)),
            size: size.map(|t| t.2),
            size_span: size.map(|(a, b, _)| (a, b)),
        });
        pos = end + close.len();
    }
    Ok(out)
}

/// `xml` with the text of the first element `name` set to `value` (escaped); if there is
/// none, the element is inserted after the first `</after>`.
pub fn set_element_text(xml: &str, name: &str, value: &str, after: &str) -> Option<String> {
    if let Some(x) = replace_element_text(xml, name, value) {
        return Some(x);
    }
    let close = format!("</{after}>");
    let at = xml.find(&close)? + close.len();
    Some(format!(
        "{}<{name}>{}</{name}>{}",
        xml.get(..at)?,
        xml_escape(value),
        xml.get(at..)?
    ))
}

/// Unescaped text of the first element `name`.
pub fn element_text(xml: &str, name: &str) -> Option<String> {
    child_text(xml, 0, xml.len(), name)
        .and_then(|(a, b)| xml.get(a..b))
        .map(unescape)
}

/// Unescaped texts of every element `name`, in document order.
pub fn element_texts(xml: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some((a, b)) = child_text(xml, pos, xml.len(), name) {
        out.push(xml.get(a..b).map(unescape).unwrap_or_default());
        pos = b;
    }
    out
}

/// `xml` with the text of the first element `name` replaced by `value` (escaped).
pub fn replace_element_text(xml: &str, name: &str, value: &str) -> Option<String> {
    let (a, b) = child_text(xml, 0, xml.len(), name)?;
    Some(format!(
        "{}{}{}",
        xml.get(..a)?,
        xml_escape(value),
        xml.get(b..)?
    ))
}

/// The local name of a document's root element (after an optional BOM, XML declaration,
/// comments and white space), or `None` if the text does not start like XML.
pub fn root_element(doc: &[u8]) -> Option<&str> {
    let mut rest = doc.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(doc);
    loop {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        rest = rest.get(start..)?;
        if rest.starts_with(b"<?") {
            let end = find(rest, b"?>")?;
            rest = rest.get(end + 2..)?;
        } else if rest.starts_with(b"<!--") {
            let end = find(rest, b"-->")?;
            rest = rest.get(end + 3..)?;
        } else {
            break;
        }
    }
    let name = rest.strip_prefix(b"<")?;
    let len = name
        .iter()
        .position(|b| b.is_ascii_whitespace() || matches!(b, b'>' | b'/'))?;
    let qname = std::str::from_utf8(name.get(..len)?).ok()?;
    let local = qname.rsplit_once(':').map_or(qname, |(_, l)| l);
    (!local.is_empty()).then_some(local)
}

/// Whether a document ends with the end of its root element (`</Name>`, any prefix, or a
/// self-closing root), white space aside: nothing may follow the document.
pub fn ends_with_root(doc: &[u8], root: &str) -> bool {
    let end = doc
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let body = doc.get(..end).unwrap_or(&[]);
    let Some(open) = body.iter().rposition(|&b| b == b'<') else {
        return false;
    };
    if body.ends_with(b"/>") {
        // A self-closing root: `<Root .../>` is the last (and only) element.
        let tag = body.get(open + 1..).unwrap_or(&[]);
        let len = tag
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'/')
            .unwrap_or(tag.len());
        let name = std::str::from_utf8(tag.get(..len).unwrap_or(&[])).unwrap_or("");
        return name.rsplit_once(':').map_or(name, |(_, l)| l) == root;
    }
    let Some(tag) = body.get(open..).and_then(|t| t.strip_prefix(b"</")) else {
        return false;
    };
    let Some(name) = tag.strip_suffix(b">") else {
        return false;
    };
    let name = std::str::from_utf8(name).unwrap_or("").trim_end();
    name.rsplit_once(':').map_or(name, |(_, l)| l) == root
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated><Contents><Key>a&lt;Size&gt;</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>&quot;0123&quot;</ETag><Size>29</Size><StorageClass>STANDARD</StorageClass></Contents><Contents><Key>mp</Key><Size>100</Size><ETag>"abc-2"</ETag></Contents><Contents><Key>odd</Key><ETag>"x"</ETag><Size>5</Size></Contents><CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes></ListBucketResult>"#;

    #[test]
    fn rewrites_entries_only() {
        let mut seen = Vec::new();
        let out = rewrite_sizes(V2, &mut |size, etag| {
            seen.push((size, etag.to_string()));
            (size != 5).then_some(size + 1000)
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (29, "\"0123\"".to_string()),
                (100, "\"abc-2\"".to_string()),
                (5, "\"x\"".to_string())
            ]
        );
        assert!(
            out.contains("<Size>1029</Size>")
                && out.contains("<Size>1100</Size>")
                && out.contains("<Size>5</Size>")
        );
        assert!(out.contains("<Key>a&lt;Size&gt;</Key>"));
        assert_eq!(out.len(), V2.len() + 3);
    }

    #[test]
    fn versions_and_parts() {
        let v = "<ListVersionsResult><Version><Key>k</Key><ETag>\"e\"</ETag><Size>10</Size></Version><DeleteMarker><Key>k</Key></DeleteMarker></ListVersionsResult>";
        assert!(rewrite_sizes(v, &mut |s, _| Some(s - 1))
            .unwrap()
            .contains("<Size>9</Size>"));
        let p = "<ListPartsResult><Part><PartNumber>1</PartNumber><ETag>\"e\"</ETag><Size>300</Size></Part><Part><PartNumber>2</PartNumber><Size>7</Size></Part></ListPartsResult>";
        let out = rewrite_sizes(p, &mut |s, _| Some(s * 2)).unwrap();
        assert!(out.contains("<Size>600</Size>") && out.contains("<Size>14</Size>"));
        assert!(rewrite_sizes("<Contents><Size>x</Size></Contents>", &mut |s, _| Some(s)).is_err());
        assert!(rewrite_sizes("<Contents><Size>1</Size>", &mut |s, _| Some(s)).is_err());
    }

    #[test]
    fn element_helpers() {
        let x = "<CopyObjectResult><LastModified>t</LastModified><ETag>&quot;abc&quot;</ETag></CopyObjectResult>";
        assert_eq!(element_text(x, "ETag").as_deref(), Some("\"abc\""));
        assert_eq!(replace_element_text(x, "ETag", "\"d\"").unwrap(), "<CopyObjectResult><LastModified>t</LastModified><ETag>&quot;d&quot;</ETag></CopyObjectResult>");
        assert_eq!(unescape("a&#34;b&#x41;&bogus;"), "a\"bA&bogus;");
    }

    proptest! {
        #[test]
        fn identity_map_keeps_bytes(n in 0usize..20, sizes in proptest::collection::vec(0u64..1_000_000, 20)) {
            let mut x = String::from("<ListBucketResult>");
            for (i, s) in sizes.iter().take(n).enumerate() {
                x.push_str(&format!("<Contents><Key>k{i}</Key><Size>{s}</Size><ETag>\"e{i}\"</ETag></Contents>"));
            }
            x.push_str("</ListBucketResult>");
            prop_assert_eq!(rewrite_sizes(&x, &mut |s, _| Some(s)).unwrap(), x);
        }
    }

    #[test]
    fn root_elements() {
        let cases: [(&[u8], Option<&str>); 8] = [
            (b"<Tagging><TagSet/></Tagging>", Some("Tagging")),
            (
                b"\xEF\xBB\xBF<?xml version=\"1.0\"?>\n<!-- c --> <Delete xmlns=\"x\">",
                Some("Delete"),
            ),
            (b"<s3:Retention>", Some("Retention")),
            (b"<Tagging/>", Some("Tagging")),
            (b"plain text", None),
            (b"", None),
            (b"<?xml never closed", None),
            (b"<", None),
        ];
        for (doc, want) in cases {
            assert_eq!(
                root_element(doc),
                want,
                "{:?}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn all_element_texts() {
        let x = "<C><Part><PartNumber>1</PartNumber></Part><Part><PartNumber> 2 </PartNumber></Part></C>";
        assert_eq!(element_texts(x, "PartNumber"), ["1", " 2 "]);
        assert!(element_texts(x, "ETag").is_empty());
    }

    #[test]
    fn documents_end_with_their_root() {
        assert!(ends_with_root(b"<Tagging><TagSet/></Tagging>\n", "Tagging"));
        assert!(ends_with_root(b"<s3:Tagging></s3:Tagging>", "Tagging"));
        assert!(ends_with_root(b"<Tagging/>", "Tagging"));
        assert!(!ends_with_root(
            b"<Tagging></Tagging>plaintext after it",
            "Tagging"
        ));
        assert!(!ends_with_root(b"<Tagging>plaintext", "Tagging"));
        assert!(!ends_with_root(b"<Tagging></Other>", "Tagging"));
        assert!(!ends_with_root(b"<Tagging><x/>", "Tagging"));
    }

    #[test]
    fn listing_entries_in_document_order() {
        let x = "<ListVersionsResult><Prefix>p</Prefix><IsTruncated>false</IsTruncated>\
            <Version><Key>a&amp;b</Key><VersionId>v1</VersionId><ETag>&quot;e1&quot;</ETag><Size>10</Size></Version>\
            <DeleteMarker><Key>b</Key><VersionId>v2</VersionId></DeleteMarker>\
            <Version><Key>c</Key><VersionId>v3</VersionId><ETag>\"e3\"</ETag><Size>0</Size></Version>\
            <CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes></ListVersionsResult>";
        let e = listing_entries(x).unwrap();
        let kinds: Vec<_> = e.iter().map(|e| (e.kind, e.key.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (EntryKind::Version, "a&b"),
                (EntryKind::DeleteMarker, "b"),
                (EntryKind::Version, "c"),
                (EntryKind::Prefix, "d/")
            ]
        );
        assert_eq!((e[0].etag.as_str(), e[0].size), ("\"e1\"", Some(10)));
        assert_eq!(e[0].version_id.as_deref(), Some("v1"));
        let (a, b) = e[0].size_span.unwrap();
        assert_eq!(&x[a..b], "10");
        assert_eq!(
            &x[e[3].span.0..e[3].span.1],
            "<CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes>"
        );
        assert!(listing_entries("<Contents><Key>a</Key>").is_err());
        assert!(listing_entries("<Contents><Size>x</Size></Contents>").is_err());
        let set = set_element_text(x, "NextKeyMarker", "a<", "IsTruncated").unwrap();
        assert!(
            set.contains("<IsTruncated>false</IsTruncated><NextKeyMarker>a&lt;</NextKeyMarker>")
        );
        let again = set_element_text(&set, "NextKeyMarker", "z", "IsTruncated").unwrap();
        assert_eq!(element_text(&again, "NextKeyMarker").as_deref(), Some("z"));
    }
}
