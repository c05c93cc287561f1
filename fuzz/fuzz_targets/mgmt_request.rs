//! Fuzz target: a management API request as the server decodes it, after TLS: the request line's
//! method, path and query (first line), then the body, through routing, the query parameters
//! and every body decoder.
#![no_main]
use mgmt::api;
use mgmt::backend::{decode, Request};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(head) = std::str::from_utf8(head) else { return };
    let (method, target) = head.split_once(' ').unwrap_or(("GET", head));
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok((route, params)) = api::find(method, path) else { return };
    let Ok(q) = api::query(route, query) else { return };
    if let Ok(body) = decode(route.body, body) {
        let r = Request { op: route.op, params: &params, query: &q, text: route.text(), body };
        let _ = (r.param("name"), r.flag("force"), r.number("interval"), format!("{r:?}"));
    }
});
