//! Admin HTTP JSON for chorus-durable servers kept in this member's store:
//!
//! * `GET /durable`: every server in the durable registry with its queue
//!   depth, state size, dead letters, waiting calls and lock
//!   (`{"servers":[...]}`).
//! * `GET /durable?tenant=PREFIX`: the same figures for one tenant
//!   (registered or not; percent-encode the prefix if it needs it).
//!
//! Reads go through the member's key-value server like any client read
//! (linearizable); nothing is decoded beyond record sizes and counts.

use std::sync::Arc;

use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::routing::get;
use chorus_backend::{BackendError, EmbeddedKv};
use chorus_durable::stats::{registered_stats, tenant_stats};
use chorus_durable::Error;

use crate::backend::Backend;

type JsonReply = (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
);

/// The `/durable` route.
pub(crate) fn routes(backend: &Arc<Backend>) -> axum::Router {
    let store = EmbeddedKv::attach(backend.node.clone(), backend.local.clone(), backend.timeout);
    axum::Router::new().route(
        "/durable",
        get(move |RawQuery(query): RawQuery| {
            let store = store.clone();
            async move { durable_json(&store, query.as_deref()).await }
        }),
    )
}

fn reply(code: StatusCode, body: String) -> JsonReply {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

fn error_reply(error: &Error) -> JsonReply {
    let code = match error {
        Error::InvalidName { .. } => StatusCode::BAD_REQUEST,
        Error::Backend(backend) if backend.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        Error::Backend(BackendError::Closed) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = serde_json::json!({ "error": error.to_string() }).to_string();
    reply(code, body)
}

async fn durable_json(store: &EmbeddedKv, query: Option<&str>) -> JsonReply {
    let tenant = query.and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("tenant="))
            .map(percent_decode)
    });
    let body = match tenant {
        Some(Ok(tenant)) => tenant_stats(store, &tenant)
            .await
            .map(|stats| serde_json::to_string(&stats)),
        Some(Err(reason)) => {
            let body = serde_json::json!({ "error": reason }).to_string();
            return reply(StatusCode::BAD_REQUEST, body);
        }
        None => registered_stats(store)
            .await
            .map(|servers| serde_json::to_string(&serde_json::json!({ "servers": servers }))),
    };
    match body {
        Ok(Ok(body)) => reply(StatusCode::OK, body),
        Ok(Err(error)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": error.to_string() }).to_string(),
        ),
        Err(error) => error_reply(&error),
    }
}

/// Decodes a query value (`%XX` escapes and `+` for space).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = bytes
                    .get(index + 1..index + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {text:?}"))?;
                out.push(hex);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("tenant {text:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("app%2Fjobs+1").as_deref(), Ok("app/jobs 1"));
        assert!(percent_decode("bad%2").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
