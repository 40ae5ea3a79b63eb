//! Asking the download worker to run a download's next slice.
//!
//! The worker is a private component, reached by service chaining: the worker itself at the
//! end of its slice, and the sweeps of the listing and history components when they find a
//! dead worker's download, send `GET http://download.spin.internal/?resume=<id>&slice=<n>`.
//! The gateway never forwards a query without `download=` to the worker, so this request
//! cannot come from outside; it carries no secret and only lets an awaiting download go on
//! (`downlink_core::download::slices`). Where the host has no service chaining (Fermyon
//! Cloud) the request fails and the caller falls back (the download ends as interrupted).

use std::time::Duration;

use crate::fetch::{self, BodyStep, ResponseBody, Target};

/// Where the download worker answers chained requests.
pub const WORKER_AUTHORITY: &str = "download.spin.internal";
/// How long to wait for the worker's answer (it answers before transferring).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the worker to go on with download `id` from the checkpoint of slice `slice`; `true`
/// if it took the work, or found that another invocation has it.
pub fn continue_download(id: &str, slice: u32) -> bool {
    let path_and_query = format!("/?resume={id}&slice={slice}");
    let target = Target { scheme: "http", authority: WORKER_AUTHORITY, path_and_query: &path_and_query };
    let answer = fetch::start_get(&target, &[], ANSWER_TIMEOUT, ANSWER_TIMEOUT).and_then(|pending| {
        fetch::await_response(&pending, fetch::after(ANSWER_TIMEOUT), Duration::from_millis(250), &mut || true)
    });
    match answer {
        Ok(response) => {
            let status = response.status();
            // Read the short answer to its end, so the worker is not left writing into nothing.
            if let Ok(mut body) = ResponseBody::of(&response) {
                let deadline = fetch::after(Duration::from_secs(1));
                while let Ok(BodyStep::Data(_) | BodyStep::Idle) = body.step(4096, deadline, Duration::from_millis(100))
                {
                }
            }
            matches!(status, 202 | 409)
        }
        Err(error) => {
            eprintln!("download {id}: could not ask for its next slice: {error:?}");
            false
        }
    }
}
