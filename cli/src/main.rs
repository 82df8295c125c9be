//! `s3crypt`: read, verify, inspect and re-key what the s3crypt filter stored, straight
//! from the backend (or from raw files), without Envoy; and read, verify or migrate what
//! the Python predecessor stored. See README "Recovery and key rotation".

mod cmd;
mod import;
mod keys;
mod object;
mod rewrap;
mod run;
mod s3;

use std::fmt;
use std::process::ExitCode;

/// Why something failed, by kind (verify's summary counts failures by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailKind {
    Usage,
    Backend,
    Io,
    NotFound,
    UnknownKey,
    Unwrap,
    Envelope,
    Integrity,
    Length,
    Unencrypted,
    Changed,
    Unsupported,
}

impl FailKind {
    pub fn name(self) -> &'static str {
        match self {
            FailKind::Usage => "usage",
            FailKind::Backend => "backend error",
            FailKind::Io => "local i/o",
            FailKind::NotFound => "not found",
            FailKind::UnknownKey => "unknown key id",
            FailKind::Unwrap => "data key does not unwrap",
            FailKind::Envelope => "malformed envelope",
            FailKind::Integrity => "integrity (tampered or corrupt)",
            FailKind::Length => "wrong length (truncated or extended)",
            FailKind::Unencrypted => "not encrypted",
            FailKind::Changed => "changed while processed",
            FailKind::Unsupported => "not supported",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fail {
    pub kind: FailKind,
    pub msg: String,
}

impl Fail {
    pub fn new(kind: FailKind, msg: impl Into<String>) -> Fail {
        Fail {
            kind,
            msg: msg.into(),
        }
    }
    pub fn usage(msg: String) -> Fail {
        Fail::new(FailKind::Usage, msg)
    }
    pub fn backend(msg: String) -> Fail {
        Fail::new(FailKind::Backend, msg)
    }
    pub fn io(e: std::io::Error) -> Fail {
        Fail::new(FailKind::Io, e.to_string())
    }
    /// A non-2xx backend response: its S3 error code and message.
    pub fn status(method: &str, path: &str, r: s3::Response) -> Fail {
        let status = r.status;
        let text = if method == "HEAD" {
            String::new()
        } else {
            r.text().unwrap_or_default()
        };
        let code = s3crypt_core::s3::xml::element_text(&text, "Code").unwrap_or_default();
        let msg = s3crypt_core::s3::xml::element_text(&text, "Message").unwrap_or_default();
        let kind = match status {
            404 => FailKind::NotFound,
            412 => FailKind::Changed,
            _ => FailKind::Backend,
        };
        Fail::new(
            kind,
            format!("{method} {path}: {status} {code} {msg}")
                .trim_end()
                .to_string(),
        )
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.msg)
    }
}

const USAGE: &str = "\
s3crypt — read, verify, inspect and re-key s3crypt objects without Envoy

USAGE
  s3crypt decrypt  s3://BUCKET/KEY [-o FILE]
  s3crypt decrypt  --file STORED --meta HEAD.json [--manifest MANIFEST] [-o FILE]
  s3crypt verify   s3://BUCKET[/PREFIX] [--jobs N] [--report FILE] [--allow-plaintext]
  s3crypt verify   --file STORED --meta HEAD.json [--manifest MANIFEST]
  s3crypt inspect  s3://BUCKET/KEY [--json]
  s3crypt inspect  --file STORED --meta HEAD.json [--manifest MANIFEST] [--json]
  s3crypt rewrap   s3://BUCKET[/PREFIX] [--dry-run] [--jobs N] [--report FILE]
  s3crypt import-s3proxy verify|decrypt|reencrypt s3://BUCKET[/PREFIX|/KEY] [-o FILE]
                   [--dry-run] [--jobs N] [--report FILE]

KEYS (never on the command line)
  S3CRYPT_KEKS            id=base64key[,id=base64key…], as the filter reads it
                          (or --keys-file FILE, `-` for stdin)
  S3CRYPT_ACTIVE_KEY_ID   the key rewrap and reencrypt wrap data keys under
                          (or --active-key-id ID)
  S3PROXY_ENCRYPT_KEY     the predecessor's key string, to read its objects
                          (or --s3proxy-key-file FILE, `-` for stdin;
                          --s3proxy-meta NAME if it was not `isec`)

BACKEND
  --endpoint URL          or S3CRYPT_BACKEND_ENDPOINT, AWS_ENDPOINT_URL
  --region REGION         or AWS_REGION, AWS_DEFAULT_REGION (default us-east-1)
  credentials             S3CRYPT_BACKEND_ACCESS_KEY_ID / S3CRYPT_BACKEND_SECRET_ACCESS_KEY,
                          else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY

A raw object is its stored bytes (`aws s3api get-object` against the backend) and the JSON
`aws s3api head-object` prints for it. Exit status: 0 all verified, 1 any failure, 2 usage.
";

/// Parsed command line: positional arguments and `--name [value]` options.
pub struct Args {
    pub pos: Vec<String>,
    opts: Vec<(String, Option<String>)>,
}

/// Options that take no value.
const FLAGS: &[&str] = &["--dry-run", "--json", "--allow-plaintext", "--help", "-h"];
/// Options that take a value.
const VALUED: &[&str] = &[
    "-o",
    "--output",
    "--file",
    "--meta",
    "--manifest",
    "--jobs",
    "--report",
    "--keys-file",
    "--active-key-id",
    "--s3proxy-key-file",
    "--s3proxy-meta",
    "--endpoint",
    "--region",
];

impl Args {
    fn parse(argv: Vec<String>) -> Result<Args, Fail> {
        let mut pos = Vec::new();
        let mut opts = Vec::new();
        let mut it = argv.into_iter();
        while let Some(a) = it.next() {
            if FLAGS.contains(&a.as_str()) {
                opts.push((a, None));
            } else if VALUED.contains(&a.as_str()) {
                let v = it
                    .next()
                    .ok_or_else(|| Fail::usage(format!("{a} needs a value")))?;
                opts.push((a, Some(v)));
            } else if a.starts_with('-') && a != "-" {
                // Only the name: what follows a `=` may be a secret typed where it does not belong.
                let name = a.split('=').next().unwrap_or_default();
                return Err(Fail::usage(format!("unknown option {name}")));
            } else {
                pos.push(a);
            }
        }
        Ok(Args { pos, opts })
    }
    pub fn flag(&self, name: &str) -> bool {
        self.opts.iter().any(|(k, _)| k == name)
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }
    pub fn output(&self) -> Option<&str> {
        self.get("-o").or_else(|| self.get("--output"))
    }
    pub fn jobs(&self) -> Result<usize, Fail> {
        match self.get("--jobs") {
            None => Ok(4),
            Some(j) => j
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| Fail::usage("--jobs must be 1..64".into())),
        }
    }
    pub fn keys(&self) -> Result<keys::Keys, Fail> {
        keys::Keys::load(
            self.get("--keys-file"),
            self.get("--active-key-id"),
            self.get("--s3proxy-key-file"),
            self.get("--s3proxy-meta"),
        )
    }
    pub fn backend(&self) -> Result<s3::Backend, Fail> {
        let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        let endpoint = self
            .get("--endpoint")
            .map(str::to_string)
            .or_else(|| env("S3CRYPT_BACKEND_ENDPOINT"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .ok_or_else(|| {
                Fail::usage("no backend: --endpoint URL or S3CRYPT_BACKEND_ENDPOINT".into())
            })?;
        let region = self
            .get("--region")
            .map(str::to_string)
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let (ak, sk) = match (env("S3CRYPT_BACKEND_ACCESS_KEY_ID"), env("S3CRYPT_BACKEND_SECRET_ACCESS_KEY")) {
            (Some(a), Some(s)) => (a, s),
            _ => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(a), Some(s)) => (a, s),
                _ => {
                    return Err(Fail::usage(
                        "no backend credentials: S3CRYPT_BACKEND_ACCESS_KEY_ID and S3CRYPT_BACKEND_SECRET_ACCESS_KEY".into(),
                    ))
                }
            },
        };
        s3::Backend::new(&endpoint, &region, &ak, &sk)
    }
}

/// `s3://bucket[/key or prefix]`.
pub fn parse_location(s: &str) -> Result<(String, String), Fail> {
    let rest = s
        .strip_prefix("s3://")
        .ok_or_else(|| Fail::usage("a location is not s3://BUCKET[/KEY]".into()))?;
    let (b, k) = rest.split_once('/').unwrap_or((rest, ""));
    if b.is_empty() {
        return Err(Fail::usage("a location names no bucket".into()));
    }
    Ok((b.to_string(), k.to_string()))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("s3crypt: {}\n\n{USAGE}", e.msg);
            return ExitCode::from(2);
        }
    };
    if args.flag("--help") || args.flag("-h") || args.pos.is_empty() {
        print!("{USAGE}");
        return if args.pos.is_empty() && !args.flag("--help") && !args.flag("-h") {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    // Positional arguments past the ones a command takes are refused (never ignored: one
    // may be a key typed on the command line) and not echoed.
    let most = match args.pos[0].as_str() {
        "import-s3proxy" => 3,
        _ => 2,
    };
    if args.pos.len() > most {
        eprintln!(
            "s3crypt: unexpected argument {} (not shown; keys are never taken from the command line)\n(s3crypt --help for usage)",
            most + 1
        );
        return ExitCode::from(2);
    }
    let r = match args.pos[0].as_str() {
        "decrypt" => cmd::decrypt(&args),
        "verify" => cmd::verify(&args),
        "inspect" => cmd::inspect(&args),
        "rewrap" => rewrap::rewrap(&args),
        "import-s3proxy" => import::import(&args),
        other => Err(Fail::usage(format!("unknown command {other:?}"))),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if e.kind == FailKind::Usage => {
            eprintln!("s3crypt: {}\n(s3crypt --help for usage)", e.msg);
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("s3crypt: {e}");
            ExitCode::from(1)
        }
    }
}
