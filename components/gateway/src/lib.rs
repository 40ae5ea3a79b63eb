//! The gateway owns `/...`. Spin routes by path only, so the gateway reads the query and
//! forwards each request to the private component that serves it.
//!
//! No endpoint behind it exists yet: every request gets `501 NOT_IMPLEMENTED` in the error
//! envelope, never made-up data.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_req: Request) -> anyhow::Result<impl IntoResponse> {
    Ok(Response::builder()
        .status(501)
        .header("content-type", "application/json")
        .body(r#"{"success":false,"error":"NOT_IMPLEMENTED","message":"this endpoint is not implemented yet"}"#)
        .build())
}
