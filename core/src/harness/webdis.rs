//! A fake webdis in front of an in-memory Redis: `/CMD/arg/...` over HTTP (a PUT body is
//! the last argument), JSON answers as webdis gives them (`{"GET":"v"}`, `{"GET":null}`,
//! `{"SETEX":[true,"OK"]}`, `{"DEL":1}`, `{"PING":[true,"PONG"]}`, `{"HSET":1}`,
//! `{"HGETALL":{"f":"v"}}`, `{"EXPIRE":1}`), keys and hashes with TTLs that
//! expire on the harness clock, and HTTP basic auth when configured. Failures and delays
//! of call-outs are the driver's faults; a test can also read and write the store as
//! whoever else has access to Redis.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::drive::Http;

pub struct FakeWebdis {
    /// `Authorization` value required, if any.
    auth: Option<String>,
    /// key → (value, expiry in Unix seconds).
    pub data: BTreeMap<String, (Vec<u8>, Option<i64>)>,
    /// Hashes: key → (field → value, expiry in Unix seconds).
    pub hashes: BTreeMap<String, (BTreeMap<String, String>, Option<i64>)>,
    /// Commands handled, as `CMD key` (for tests that count them).
    pub log: Vec<String>,
}

fn answer(status: u16, v: Value) -> Http {
    let mut r = Http::with_status(status);
    let body = v.to_string().into_bytes();
    r.headers.set("content-type", "application/json");
    r.headers.set("content-length", body.len().to_string());
    r.body = body;
    r
}

fn decode(s: &str) -> String {
    crate::s3::uri::decode(s).unwrap_or_else(|_| s.to_string())
}

impl FakeWebdis {
    pub fn new(auth: Option<String>) -> FakeWebdis {
        FakeWebdis {
            auth,
            data: BTreeMap::new(),
            hashes: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    fn live(&mut self, key: &str, now: i64) -> Option<&Vec<u8>> {
        if self
            .data
            .get(key)
            .is_some_and(|(_, exp)| exp.is_some_and(|e| now >= e))
        {
            self.data.remove(key);
        }
        self.data.get(key).map(|(v, _)| v)
    }

    fn live_hash(&mut self, key: &str, now: i64) -> Option<&mut BTreeMap<String, String>> {
        if self
            .hashes
            .get(key)
            .is_some_and(|(_, exp)| exp.is_some_and(|e| now >= e))
        {
            self.hashes.remove(key);
        }
        self.hashes.get_mut(key).map(|(h, _)| h)
    }

    pub fn handle(&mut self, req: &Http, now: i64) -> Http {
        if self.auth.is_some() && req.headers.get("authorization") != self.auth.as_deref() {
            return answer(401, json!({"error": "unauthorized"}));
        }
        let path = req.headers.get(":path").unwrap_or("/");
        let mut args: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(decode)
            .collect();
        let cmd = args.remove(0).to_ascii_uppercase();
        if req.headers.get(":method") == Some("PUT") {
            args.push(String::from_utf8_lossy(&req.body).into_owned());
        }
        self.log.push(format!(
            "{cmd} {}",
            args.first().cloned().unwrap_or_default()
        ));
        let arity = |n: usize| args.len() == n;
        let v = match cmd.as_str() {
            "PING" => json!([true, "PONG"]),
            "GET" if arity(1) => match self.live(&args[0], now) {
                Some(v) => Value::String(String::from_utf8_lossy(v).into_owned()),
                None => Value::Null,
            },
            "SET" if arity(2) => {
                self.data
                    .insert(args[0].clone(), (args[1].clone().into_bytes(), None));
                json!([true, "OK"])
            }
            "SETEX" if arity(3) => match args[1].parse::<i64>() {
                Ok(ttl) if ttl > 0 => {
                    self.data.insert(
                        args[0].clone(),
                        (args[2].clone().into_bytes(), Some(now + ttl)),
                    );
                    json!([true, "OK"])
                }
                _ => json!([false, "ERR invalid expire time in 'setex' command"]),
            },
            "DEL" if !args.is_empty() => {
                let mut n = 0;
                for k in &args {
                    if self.live(k, now).is_some() || self.live_hash(k, now).is_some() {
                        n += 1;
                    }
                    self.data.remove(k);
                    self.hashes.remove(k);
                }
                json!(n)
            }
            "HSET" if arity(3) => {
                if self.live(&args[0], now).is_some() {
                    json!([
                        false,
                        "WRONGTYPE Operation against a key holding the wrong kind of value"
                    ])
                } else {
                    let h = &mut self
                        .hashes
                        .entry(args[0].clone())
                        .or_insert_with(|| (BTreeMap::new(), None))
                        .0;
                    json!(u8::from(
                        h.insert(args[1].clone(), args[2].clone()).is_none()
                    ))
                }
            }
            "HGETALL" if arity(1) => match self.live_hash(&args[0], now) {
                Some(h) => json!(h),
                None => json!({}),
            },
            "EXPIRE" if arity(2) => match args[1].parse::<i64>() {
                Ok(ttl) => {
                    let at = Some(now + ttl);
                    if self.live(&args[0], now).is_some() {
                        self.data.get_mut(&args[0]).unwrap().1 = at;
                        json!(1)
                    } else if self.live_hash(&args[0], now).is_some() {
                        self.hashes.get_mut(&args[0]).unwrap().1 = at;
                        json!(1)
                    } else {
                        json!(0)
                    }
                }
                Err(_) => json!([false, "ERR value is not an integer or out of range"]),
            },
            "EXISTS" if arity(1) => json!(u8::from(self.live(&args[0], now).is_some())),
            _ => json!([false, format!("ERR wrong command or arguments: {cmd}")]),
        };
        answer(200, json!({ cmd: v }))
    }

    // Whoever else can write Redis.

    pub fn get_raw(&self, key: &str) -> Option<String> {
        self.data
            .get(key)
            .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn set_raw(&mut self, key: &str, value: &str) {
        let exp = self.data.get(key).and_then(|(_, e)| *e);
        self.data
            .insert(key.to_string(), (value.as_bytes().to_vec(), exp));
    }

    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .data
            .keys()
            .chain(self.hashes.keys())
            .cloned()
            .collect();
        k.sort();
        k
    }

    /// Keys that have not expired at `now`.
    pub fn live_keys(&self, now: i64) -> Vec<String> {
        let mut k: Vec<String> = self
            .data
            .iter()
            .map(|(k, (_, e))| (k, e))
            .chain(self.hashes.iter().map(|(k, (_, e))| (k, e)))
            .filter(|(_, e)| e.is_none_or(|e| now < e))
            .map(|(k, _)| k.clone())
            .collect();
        k.sort();
        k
    }

    /// A hash as stored (whoever else can read Redis).
    pub fn hash_raw(&self, key: &str) -> Option<BTreeMap<String, String>> {
        self.hashes.get(key).map(|(h, _)| h.clone())
    }

    /// Expiry of a key or hash, if it has one.
    pub fn expiry(&self, key: &str) -> Option<i64> {
        self.data
            .get(key)
            .and_then(|(_, e)| *e)
            .or_else(|| self.hashes.get(key).and_then(|(_, e)| *e))
    }
}
