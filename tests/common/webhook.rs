//! Pager webhook deliveries, as PagerDuty and Alertmanager send them.

use std::io::{Read, Write};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};

use super::Server;

/// `POST path` on the server's HTTP side: (status, body).
pub fn post(server: &Server, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(&server.http).expect("the HTTP side listens");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        server.http,
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // The server may answer (413) before it read a large body, and close.
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn incident(event_type: &str, incident: &str, service: &str) -> Vec<u8> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    incident_at(event_type, incident, service, &now)
}

pub fn incident_at(event_type: &str, incident: &str, service: &str, at: &str) -> Vec<u8> {
    serde_json::json!({"event": {
        "id": format!("ev-{}", uuid::Uuid::new_v4().simple()), "event_type": event_type,
        "resource_type": "incident", "occurred_at": at,
        "agent": {"id": "PAGENT1", "type": "user_reference"},
        "data": {"id": incident, "type": "incident", "number": 7, "status": "triggered",
                 "title": "Region down", "urgency": "high",
                 "incident_key": "region-down",
                 "service": {"id": service, "summary": "Shop", "type": "service_reference"}}}})
    .to_string()
    .into_bytes()
}

/// A PagerDuty delivery signed with `secret`.
pub fn pagerduty(server: &Server, secret: &str, body: &[u8]) -> (u16, String) {
    post(server, "/v1/webhooks/pagerduty", &[("X-PagerDuty-Signature", signature(secret, body))], body)
}
