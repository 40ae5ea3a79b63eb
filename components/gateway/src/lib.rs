//! The gateway owns `/...`. Spin routes by path only, so the gateway reads the query, picks
//! the private component that serves it (`downlink_core::query::GatewayTarget`) and forwards
//! the request there through service chaining (`http://<component>.spin.internal`). Bodies are
//! spliced host-side in both directions, never buffered.
//!
//! Where the host has no service chaining (Fermyon Cloud), the feature `in-process` links those
//! components' handlers in and calls the one that serves the request directly, in this instance
//! (their grants are then the gateway's: see the Cloud manifest).

use downlink_core::query::{GatewayTarget, Query};
use downlink_core::web;
use downlink_spin::http::{send_bytes, send_error, RequestHead};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    // A person opening the app in a browser gets the console's sign-in page, not a 401.
    if web::is_browser_landing(
        &head.method_name(),
        &head.path_with_query,
        head.header("accept"),
        head.header("authorization"),
    ) {
        return send_bytes(out, 303, &[("location", web::CONSOLE_PREFIX.to_string())], b"");
    }
    // Every request needs a valid token, whatever serves it; scopes are checked downstream.
    if let Err(e) = downlink_spin::auth::authenticate(head.header("authorization")) {
        return send_error(out, &e);
    }
    let target = match Query::parse(head.query()).and_then(|q| GatewayTarget::for_query(&q)) {
        Ok(target) => target,
        Err(e) => return send_error(out, &e),
    };
    #[cfg(feature = "in-process")]
    match target {
        GatewayTarget::Files => files::handle(req, out).await,
        GatewayTarget::StartDownload => download::handle(req, out).await,
        GatewayTarget::ActiveDownloads => downloads::handle(req, out).await,
        GatewayTarget::DownloadHistory => history::handle(req, out).await,
    }
    #[cfg(not(feature = "in-process"))]
    if let Err(e) = chained::forward(req, &head, target.component(), out) {
        eprintln!("gateway: forwarding to {} failed: {}", target.component(), e.message);
    }
}

/// Service chaining: the request goes to `http://<component>.spin.internal` and back.
#[cfg(not(feature = "in-process"))]
mod chained {
    use downlink_core::{ApiError, ErrorCode};
    use downlink_spin::fetch::outbound_failure;
    use downlink_spin::http::{
        fields, header_text, is_hop_header, pipe, send_error, BodyReader, BodyWriter, RequestHead,
    };
    use spin_sdk::http::{IncomingRequest, Method, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme};
    use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
    use spin_sdk::wit::wasi::http0_2_0::types::{ErrorCode as HttpErrorCode, IncomingResponse, OutgoingBody};

    /// Forwards `req` to `component` and streams its response back. Errors before the response
    /// was started are sent to the client; later ones can only be logged.
    pub(super) fn forward(
        req: IncomingRequest,
        head: &RequestHead,
        component: &str,
        out: ResponseOutparam,
    ) -> Result<(), ApiError> {
        // A value that is not text is refused, not dropped: dropping one would change the request
        // (an `If-Match` lost makes a conditional upload unconditional). Spin and the dev host
        // already refuse such requests before any component runs; this holds on any other host.
        let headers: Result<Vec<(&str, String)>, ApiError> = head
            .headers
            .iter()
            .filter(|(name, _)| !is_hop_header(name))
            .map(|(name, value)| Ok((name.as_str(), header_text(name, value)?.to_owned())))
            .collect();
        let headers = match headers {
            Ok(headers) => headers,
            Err(e) => {
                send_error(out, &e);
                return Err(e);
            }
        };
        let outgoing = OutgoingRequest::new(fields(&headers));
        let authority = format!("{component}.spin.internal");
        let configured = outgoing.set_method(&head.method).is_ok()
            && outgoing.set_path_with_query(Some(&head.path_with_query)).is_ok()
            && outgoing.set_scheme(Some(&Scheme::Http)).is_ok()
            && outgoing.set_authority(Some(&authority)).is_ok();
        if !configured {
            let e = ApiError::invalid_request("the request cannot be forwarded");
            send_error(out, &e);
            return Err(e);
        }
        let request_body = outgoing.body().expect("a new request has a body");
        let pending = match outgoing_handler::handle(outgoing, None) {
            Ok(pending) => pending,
            Err(code) => return Err(bad_gateway(out, component, &failure_text(&code))),
        };

        // Stream the request body to the component while it runs.
        let reader = BodyReader::new(req)?;
        let request_body_sent = {
            let sink = request_body.write().map_err(|()| ApiError::internal("request body stream taken"))?;
            let copied = pipe(reader.stream(), &sink);
            drop(sink);
            copied
        };
        match request_body_sent {
            Ok(_) => {
                let _ = OutgoingBody::finish(request_body, None);
            }
            // Dropping the body unfinished tells the component the upload broke off.
            Err(_) => drop(request_body),
        }
        drop(reader);

        let response = loop {
            match pending.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(code))) => return Err(bad_gateway(out, component, &failure_text(&code))),
                Some(Err(())) => return Err(bad_gateway(out, component, "response already taken")),
                None => pending.subscribe().block(),
            }
        };
        relay(response, head, out);
        Ok(())
    }

    /// Copies the component's response (status, headers, body) to the client.
    fn relay(response: IncomingResponse, head: &RequestHead, out: ResponseOutparam) {
        let headers: Vec<(String, String)> = response
            .headers()
            .entries()
            .into_iter()
            .filter(|(name, _)| !is_hop_header(name))
            .filter_map(|(name, value)| Some((name, String::from_utf8(value).ok()?)))
            .collect();
        let headers: Vec<(&str, String)> = headers.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let outgoing = OutgoingResponse::new(fields(&headers));
        let _ = outgoing.set_status_code(response.status());
        let body = outgoing.body().expect("a new response has a body");
        out.set(outgoing);
        let writer = BodyWriter::new(body);
        if head.method == Method::Head {
            // No body on HEAD; Content-Length describes the GET.
            return;
        }
        let Ok(incoming) = response.consume() else { return };
        let Ok(source) = incoming.stream() else { return };
        let copied = writer.stream().map(|sink| pipe(&source, sink));
        drop(source);
        drop(incoming);
        if let Some(Ok(_)) = copied {
            let _ = writer.finish();
        }
    }

    /// What a failed chained request means, in words (never the code's payload).
    fn failure_text(code: &HttpErrorCode) -> String {
        ApiError::from(outbound_failure(code)).message
    }

    fn bad_gateway(out: ResponseOutparam, component: &str, detail: &str) -> ApiError {
        let e = ApiError::new(ErrorCode::BadGateway, format!("the `{component}` component failed: {detail}"));
        send_error(out, &e);
        e
    }
}
