//! A fake webdis in front of an in-memory Redis: `/CMD/arg/...` over HTTP (a PUT body is
//! the last argument), JSON answers as webdis gives them (`{"GET":"v"}`, `{"GET":null}`,
//! `{"SETEX":[true,"OK"]}`, `{"DEL":1}`, `{"PING":[true,"PONG"]}`), keys with TTLs that
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
                    if self.live(k, now).is_some() {
                        n += 1;
                    }
                    self.data.remove(k);
                }
                json!(n)
            }
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
        self.data.keys().cloned().collect()
    }

    /// Keys that have not expired at `now`.
    pub fn live_keys(&self, now: i64) -> Vec<String> {
        self.data
            .iter()
            .filter(|(_, (_, e))| e.is_none_or(|e| now < e))
            .map(|(k, _)| k.clone())
            .collect()
    }
}
