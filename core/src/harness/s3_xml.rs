//! Listings of the fake S3 (ListObjectsV2 with continuation tokens, ListObjects v1 with
//! markers, both with prefix and delimiter), the XML and date formats S3 uses, and a
//! reader of listing entries for tests.

use super::drive::Http;
use super::s3::{xml_ok, FakeS3, Req};

/// Escapes XML text as S3 does (quotes too: ETags appear as `&quot;…&quot;`).
pub fn xml_escape(s: &str) -> String {
    crate::s3::error::xml_escape(s)
}

fn civil(unix: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let d = crate::auth::sigv4::amz_date(unix);
    let n = |a: usize, b: usize| d[a..b].parse::<i64>().unwrap_or(0);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7);
    (
        n(0, 4),
        n(4, 6),
        n(6, 8),
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        weekday,
    )
}

/// `Tue, 14 Nov 2023 22:13:20 GMT`
pub fn http_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, wd) = civil(unix);
    format!(
        "{}, {d:02} {} {y} {h:02}:{mi:02}:{s:02} GMT",
        DAYS[wd as usize],
        MONTHS[(mo - 1).clamp(0, 11) as usize]
    )
}

/// `2023-11-14T22:13:20.000Z`
pub fn iso8601(unix: i64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z")
}

/// One page of a listing: the entries after `after` under `prefix`, rolled up by
/// `delimiter`, at most `max`: (contents keys, common prefixes, truncated, last item).
fn page(
    keys: &[&String],
    prefix: &str,
    delimiter: &str,
    after: &str,
    max: usize,
) -> (Vec<String>, Vec<String>, bool, Option<String>) {
    let mut contents = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut last = None;
    let mut truncated = false;
    for k in keys
        .iter()
        .filter(|k| k.as_str() > after && k.starts_with(prefix))
    {
        let rolled = (!delimiter.is_empty())
            .then(|| k[prefix.len()..].find(delimiter))
            .flatten()
            .map(|i| k[..prefix.len() + i + delimiter.len()].to_string());
        if let Some(p) = &rolled {
            if prefixes.last() == Some(p) {
                continue;
            }
            // A prefix already passed (continuation after it): its keys are skipped.
            if after.starts_with(p.as_str()) {
                continue;
            }
        }
        if contents.len() + prefixes.len() == max {
            truncated = true;
            break;
        }
        match rolled {
            Some(p) => {
                last = Some(p.clone());
                prefixes.push(p);
            }
            None => {
                last = Some(k.to_string());
                contents.push(k.to_string());
            }
        }
    }
    (contents, prefixes, truncated, last)
}

impl FakeS3 {
    fn contents_xml(&self, bucket: &str, keys: &[String]) -> String {
        let mut out = String::new();
        for k in keys {
            let o = &self.buckets[bucket][k];
            out.push_str(&format!(
                "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                xml_escape(k),
                iso8601(o.last_modified),
                xml_escape(&o.etag),
                o.data.len()
            ));
        }
        out
    }

    fn prefixes_xml(prefixes: &[String]) -> String {
        prefixes
            .iter()
            .map(|p| {
                format!(
                    "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                    xml_escape(p)
                )
            })
            .collect()
    }

    pub(super) fn list_v2(&self, r: &Req<'_>, bucket: &str) -> Http {
        let prefix = r.q("prefix").unwrap_or("");
        let delimiter = r.q("delimiter").unwrap_or("");
        let max: usize = r
            .q("max-keys")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1000)
            .min(self.max_page.clamp(1, 1000));
        let token = r.q("continuation-token");
        let after = match token {
            Some(t) => match hex::decode(t).ok().and_then(|b| String::from_utf8(b).ok()) {
                Some(a) => a,
                None => {
                    return r.err(
                        400,
                        "InvalidArgument",
                        "The continuation token provided is incorrect",
                    )
                }
            },
            None => r.q("start-after").unwrap_or("").to_string(),
        };
        let keys: Vec<&String> = self.buckets[bucket].keys().collect();
        let (contents, prefixes, truncated, last) = page(&keys, prefix, delimiter, &after, max);
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{max}</MaxKeys>",
            xml_escape(bucket),
            xml_escape(prefix),
            contents.len() + prefixes.len()
        );
        if !delimiter.is_empty() {
            out.push_str(&format!("<Delimiter>{}</Delimiter>", xml_escape(delimiter)));
        }
        out.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
        if let Some(t) = token {
            out.push_str(&format!("<ContinuationToken>{t}</ContinuationToken>"));
        }
        if truncated {
            if let Some(l) = &last {
                out.push_str(&format!(
                    "<NextContinuationToken>{}</NextContinuationToken>",
                    hex::encode(l)
                ));
            }
        }
        out.push_str(&self.contents_xml(bucket, &contents));
        out.push_str(&Self::prefixes_xml(&prefixes));
        out.push_str("</ListBucketResult>");
        xml_ok(out)
    }

    pub(super) fn list_v1(&self, r: &Req<'_>, bucket: &str) -> Http {
        let prefix = r.q("prefix").unwrap_or("");
        let delimiter = r.q("delimiter").unwrap_or("");
        let marker = r.q("marker").unwrap_or("");
        let max: usize = r
            .q("max-keys")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1000)
            .min(self.max_page.clamp(1, 1000));
        let keys: Vec<&String> = self.buckets[bucket].keys().collect();
        let (contents, prefixes, truncated, last) = page(&keys, prefix, delimiter, marker, max);
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{}</Name><Prefix>{}</Prefix><Marker>{}</Marker><MaxKeys>{max}</MaxKeys>",
            xml_escape(bucket),
            xml_escape(prefix),
            xml_escape(marker)
        );
        if !delimiter.is_empty() {
            out.push_str(&format!("<Delimiter>{}</Delimiter>", xml_escape(delimiter)));
        }
        out.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
        if truncated && !delimiter.is_empty() {
            if let Some(l) = &last {
                out.push_str(&format!("<NextMarker>{}</NextMarker>", xml_escape(l)));
            }
        }
        out.push_str(&self.contents_xml(bucket, &contents));
        out.push_str(&Self::prefixes_xml(&prefixes));
        out.push_str("</ListBucketResult>");
        xml_ok(out)
    }
}

impl FakeS3 {
    /// ListObjectVersions of an unversioned bucket: every object once, `null` version.
    pub(super) fn list_versions(&self, r: &Req<'_>, bucket: &str) -> Http {
        let prefix = r.q("prefix").unwrap_or("");
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>{}</Name><Prefix>{}</Prefix><IsTruncated>false</IsTruncated>",
            xml_escape(bucket),
            xml_escape(prefix)
        );
        for (k, o) in self.buckets[bucket]
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
        {
            out.push_str(&format!(
                "<Version><Key>{}</Key><VersionId>null</VersionId><IsLatest>true</IsLatest><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Version>",
                xml_escape(k),
                iso8601(o.last_modified),
                xml_escape(&o.etag),
                o.data.len()
            ));
        }
        out.push_str("</ListVersionsResult>");
        xml_ok(out)
    }
}

/// (key, size, ETag) of each `<Contents>` entry of a listing.
pub fn entries(xml: &str) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = xml[pos..].find("<Contents>") {
        let start = pos + i;
        let end = xml[start..]
            .find("</Contents>")
            .map_or(xml.len(), |e| start + e);
        let one = &xml[start..end];
        let t = |n: &str| crate::s3::xml::element_text(one, n).unwrap_or_default();
        out.push((
            t("Key"),
            t("Size").trim().parse().unwrap_or(u64::MAX),
            t("ETag"),
        ));
        pos = end;
    }
    out
}
