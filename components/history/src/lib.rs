//! Private: ?download_history, finished and failed downloads, newest first, paginated.
//! Not built yet: every request gets `501 NOT_IMPLEMENTED`.

use downlink_core::{ApiError, ErrorCode};
use downlink_spin::http::send_error;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(_req: IncomingRequest, out: ResponseOutparam) {
    send_error(out, &ApiError::new(ErrorCode::NotImplemented, "this endpoint is not implemented yet"));
}
