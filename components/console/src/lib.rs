//! Static pages, compiled in: `GET /api/console/` (the web console: `web/`) and
//! `GET /api/openapi.json` (the OpenAPI document of every endpoint: `openapi.json`).
//! What to answer is decided by `downlink_core::web`; this component only sends it.

use downlink_core::web::{self, WebAsset};
use downlink_spin::http::{send_error, start_response, RequestHead};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

const ASSETS: &[WebAsset] = &[
    WebAsset {
        path: web::CONSOLE_INDEX,
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../web/index.html"),
    },
    WebAsset {
        path: "/api/console/console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../web/console.js"),
    },
    WebAsset {
        path: "/api/console/console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../web/console.css"),
    },
    WebAsset { path: web::OPENAPI_PATH, content_type: "application/json", bytes: include_bytes!("../openapi.json") },
];

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    match web::answer(ASSETS, &head.method_name(), head.path(), head.header("if-none-match")) {
        Ok(answer) => {
            // Not `send_bytes`: its Content-Length would be the (empty) body's for `HEAD`.
            let mut body = start_response(out, answer.status, &answer.headers);
            // A client that went away has nothing left to be told.
            let _ = body.write_all(answer.body).and_then(|()| body.finish());
        }
        Err(e) => send_error(out, &e),
    }
}
