//! The gateway owns `/...`. Spin routes by path only, so the gateway reads the query, picks
//! the private component that serves it (`downlink_core::query::GatewayTarget`) and forwards
//! the request there through service chaining (`http://<component>.spin.internal`). Bodies are
//! spliced host-side in both directions, never buffered.

use downlink_core::query::{GatewayTarget, Query};
use downlink_core::{ApiError, ErrorCode};
use downlink_spin::fetch::outbound_failure;
use downlink_spin::http::{fields, is_hop_header, pipe, send_error, BodyReader, BodyWriter, RequestHead};
use spin_sdk::http::{IncomingRequest, Method, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{ErrorCode as HttpErrorCode, IncomingResponse, OutgoingBody};

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = RequestHead::of(&req);
    // Every request needs a valid token, whatever serves it; scopes are checked downstream.
    if let Err(e) = downlink_spin::auth::authenticate(head.header("authorization")) {
        return send_error(out, &e);
    }
    let target = match Query::parse(head.query()).and_then(|q| GatewayTarget::for_query(&q)) {
        Ok(target) => target,
        Err(e) => return send_error(out, &e),
    };
    if let Err(e) = forward(req, &head, target.component(), out) {
        eprintln!("gateway: forwarding to {} failed: {}", target.component(), e.message);
    }
}

/// Forwards `req` to `component` and streams its response back. Errors before the response
/// was started are sent to the client; later ones can only be logged.
fn forward(req: IncomingRequest, head: &RequestHead, component: &str, out: ResponseOutparam) -> Result<(), ApiError> {
    let headers: Vec<(&str, String)> = head
        .headers
        .iter()
        .filter(|(name, _)| !is_hop_header(name))
        .filter_map(|(name, value)| Some((name.as_str(), String::from_utf8(value.clone()).ok()?)))
        .collect();
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
