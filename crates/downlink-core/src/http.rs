//! Pure HTTP helpers for serving files: `Range` (RFC 9110 §14), conditional requests
//! (`If-None-Match`, `If-Match`, `If-Range`, §13), HTTP dates and `Content-Disposition`
//! (RFC 6266 / RFC 8187).

use crate::error::ApiError;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// An inclusive byte range within a representation, always `start <= end < size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        // Saturating: the fields are public, so an inverted range must not panic.
        self.end.saturating_sub(self.start).saturating_add(1)
    }

    /// Always false: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` value for a 206 response, e.g. `bytes 0-99/1000`.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, size)
    }
}

/// What to answer for a `Range` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeDecision {
    /// No usable range: send the whole representation with 200.
    Full,
    /// Send this part with 206.
    Partial(ByteRange),
    /// Answer 416 (see [`crate::error::ApiError::range_not_satisfiable`]).
    Unsatisfiable,
}

/// Evaluates a `Range` header against a representation of `size` bytes.
///
/// Only single ranges are served. A header with several ranges is answered with the full
/// representation, which RFC 9110 §14.2 allows (a server may ignore `Range`) and which spares
/// us multipart/byteranges. Syntactically invalid headers and unknown units are ignored the
/// same way. A suffix range on an empty representation also yields `Full`, since there is no
/// byte to point at.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeDecision {
    let Some(header) = header else {
        return RangeDecision::Full;
    };
    let Some((unit, set)) = header.trim().split_once('=') else {
        return RangeDecision::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeDecision::Full;
    }
    let mut specs = set.split(',').map(str::trim).filter(|spec| !spec.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return RangeDecision::Full;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeDecision::Full;
    };
    if first.is_empty() {
        let Some(suffix) = parse_digits(last) else {
            return RangeDecision::Full;
        };
        if suffix == 0 {
            return RangeDecision::Unsatisfiable;
        }
        if size == 0 {
            return RangeDecision::Full;
        }
        return RangeDecision::Partial(ByteRange { start: size.saturating_sub(suffix), end: size - 1 });
    }
    let Some(start) = parse_digits(first) else {
        return RangeDecision::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match parse_digits(last) {
            Some(end) if end >= start => end,
            _ => return RangeDecision::Full,
        }
    };
    if start >= size {
        return RangeDecision::Unsatisfiable;
    }
    RangeDecision::Partial(ByteRange { start, end: end.min(size - 1) })
}

/// Parses `1*DIGIT`; values beyond `u64` saturate, which keeps their meaning ("past the end").
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// Splits an entity-tag list (`"a", W/"b"`) into tags; `None` if malformed.
fn entity_tags(header: &str) -> Option<Vec<&str>> {
    let mut tags = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(tags);
        }
        let opaque_start = if rest.starts_with("W/\"") { 2 } else { 0 };
        if !rest[opaque_start..].starts_with('"') {
            return None;
        }
        let close = rest[opaque_start + 1..].find('"')? + opaque_start + 1;
        tags.push(&rest[..=close]);
        rest = &rest[close + 1..];
    }
}

fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// `If-None-Match`: whether the header matches `current_etag` (weak comparison), meaning a
/// GET/HEAD should be answered `304 Not Modified`. `*` matches any existing representation.
pub fn if_none_match_matches(header: &str, current_etag: &str) -> bool {
    if header.trim() == "*" {
        return true;
    }
    entity_tags(header).unwrap_or_default().into_iter().any(|tag| opaque(tag) == opaque(current_etag))
}

/// `If-Match`: whether a state-changing request may proceed (strong comparison); `current_etag`
/// is `None` when nothing exists. `*` requires existence. A malformed header fails the
/// precondition, so a garbled condition never authorises an overwrite.
pub fn if_match_passes(header: &str, current_etag: Option<&str>) -> bool {
    let Some(current) = current_etag else {
        return false;
    };
    if header.trim() == "*" {
        return true;
    }
    entity_tags(header)
        .unwrap_or_default()
        .into_iter()
        .any(|tag| !tag.starts_with("W/") && !current.starts_with("W/") && tag == current)
}

/// `If-Range`: whether a `Range` may be honoured. Without the header, yes. With an entity-tag,
/// only on a strong match; with an HTTP date, only if it equals `last_modified` exactly.
/// Anything else means the client's copy is stale and gets the full representation.
pub fn if_range_allows_partial(header: Option<&str>, current_etag: &str, last_modified: u64) -> bool {
    let Some(header) = header.map(str::trim) else {
        return true;
    };
    if header.starts_with('"') || header.starts_with("W/") {
        return !header.starts_with("W/") && !current_etag.starts_with("W/") && header == current_etag;
    }
    parse_http_date(header) == Some(last_modified)
}

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Formats unix seconds as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn format_http_date(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // Index is days % 7 < 7 and month is 1..=12, so both lookups are in range.
    let weekday = WEEKDAYS[usize::try_from(days % 7).unwrap_or(0)];
    let month_name = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!(
        "{weekday}, {day:02} {month_name} {year:04} {:02}:{:02}:{:02} GMT",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Parses an IMF-fixdate into unix seconds. The obsolete RFC 850 and asctime forms are not
/// accepted: a date we cannot read just makes `If-Range` send the full body, which is safe.
pub fn parse_http_date(text: &str) -> Option<u64> {
    let text = text.trim();
    let mut parts = text.split(' ');
    let weekday = parts.next()?.strip_suffix(',')?;
    let day: u64 = parse_fixed_digits(parts.next()?, 2)?;
    let month_name = parts.next()?;
    let year: u64 = parse_fixed_digits(parts.next()?, 4)?;
    let time = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    let month = u64::try_from(MONTHS.iter().position(|m| *m == month_name)? + 1).ok()?;
    let mut clock = time.split(':');
    let hour = parse_fixed_digits(clock.next()?, 2)?;
    let minute = parse_fixed_digits(clock.next()?, 2)?;
    let second = parse_fixed_digits(clock.next()?, 2)?;
    if clock.next().is_some() || hour > 23 || minute > 59 || second > 60 || year < 1970 {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if WEEKDAYS[usize::try_from(days % 7).ok()?] != weekday {
        return None;
    }
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn parse_fixed_digits(text: &str, width: usize) -> Option<u64> {
    if text.len() != width || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 for a date on or after it (H. Hinnant's algorithm, unsigned form).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day) of days since 1970-01-01, proleptic
/// Gregorian (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// RFC 8187 `attr-char`: everything else in `filename*` is percent-encoded.
const ATTR_CHAR_COMPLEMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `Content-Disposition: attachment` with both an ASCII `filename=` fallback (non-ASCII,
/// quotes, backslashes and control characters become `_`) and the exact UTF-8 name in
/// `filename*=UTF-8''…`, which modern clients prefer.
pub fn content_disposition_attachment(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' { c } else { '_' })
        .collect();
    let encoded = utf8_percent_encode(filename, ATTR_CHAR_COMPLEMENT);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// The validators and size of a representation being served (a file, an archive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Representation<'a> {
    /// Length in bytes.
    pub size: u64,
    /// Strong entity tag, quoted.
    pub etag: &'a str,
    /// Last modification, unix seconds.
    pub last_modified: u64,
    /// MIME type.
    pub content_type: &'a str,
}

/// The request headers that shape a GET/HEAD answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConditionalHeaders<'a> {
    /// `Range`.
    pub range: Option<&'a str>,
    /// `If-Range`.
    pub if_range: Option<&'a str>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
}

/// How to answer a GET/HEAD: status, headers, and which bytes (if any) to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponsePlan {
    /// 200, 206 or 304.
    pub status: u16,
    /// Headers to send (`content-length`, `etag`, `last-modified`, `accept-ranges`, ...).
    pub headers: Vec<(&'static str, String)>,
    /// `None`: the whole representation; `Some`: just this range. Irrelevant for 304.
    pub range: Option<ByteRange>,
    /// Whether a body follows (false for 304).
    pub has_body: bool,
}

impl ResponsePlan {
    /// A `200` for a body generated while it is sent, whose length is unknown up front (e.g.
    /// a deflated archive): no `Content-Length`, no ranges and no `ETag` (nothing to resume or
    /// revalidate against), just the type and `Last-Modified`. Request headers do not change it.
    pub fn streamed(content_type: &str, last_modified: u64) -> ResponsePlan {
        ResponsePlan {
            status: 200,
            headers: vec![
                ("content-type", content_type.to_string()),
                ("last-modified", format_http_date(last_modified)),
            ],
            range: None,
            has_body: true,
        }
    }
}

/// Plans the answer to a GET/HEAD of `rep`: `304` when `If-None-Match` matches, `206` for a
/// satisfiable single `Range` that `If-Range` (if any) allows, `200` otherwise; an
/// unsatisfiable range is `416` (the error carries `Content-Range: bytes */size`).
pub fn plan_response(rep: &Representation<'_>, request: ConditionalHeaders<'_>) -> Result<ResponsePlan, ApiError> {
    let mut headers = vec![
        ("etag", rep.etag.to_string()),
        ("last-modified", format_http_date(rep.last_modified)),
        ("accept-ranges", "bytes".to_string()),
    ];
    if request.if_none_match.is_some_and(|h| if_none_match_matches(h, rep.etag)) {
        return Ok(ResponsePlan { status: 304, headers, range: None, has_body: false });
    }
    let decision = if if_range_allows_partial(request.if_range, rep.etag, rep.last_modified) {
        parse_range(request.range, rep.size)
    } else {
        RangeDecision::Full
    };
    headers.push(("content-type", rep.content_type.to_string()));
    match decision {
        RangeDecision::Full => {
            headers.push(("content-length", rep.size.to_string()));
            Ok(ResponsePlan { status: 200, headers, range: None, has_body: true })
        }
        RangeDecision::Partial(range) => {
            headers.push(("content-length", range.len().to_string()));
            headers.push(("content-range", range.content_range(rep.size)));
            Ok(ResponsePlan { status: 206, headers, range: Some(range), has_body: true })
        }
        RangeDecision::Unsatisfiable => Err(ApiError::range_not_satisfiable(rep.size)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn streamed_responses_promise_no_length_or_ranges() {
        let plan = ResponsePlan::streamed("application/zip", 784_111_777);
        assert_eq!((plan.status, plan.range, plan.has_body), (200, None, true));
        assert_eq!(
            plan.headers,
            vec![
                ("content-type", "application/zip".to_string()),
                ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT".to_string()),
            ]
        );
    }

    use super::*;

    fn partial(start: u64, end: u64) -> RangeDecision {
        RangeDecision::Partial(ByteRange { start, end })
    }

    #[test]
    fn single_ranges() {
        let size = 1000;
        assert_eq!(parse_range(None, size), RangeDecision::Full);
        assert_eq!(parse_range(Some("bytes=0-99"), size), partial(0, 99));
        assert_eq!(parse_range(Some("bytes=500-"), size), partial(500, 999));
        assert_eq!(parse_range(Some("bytes=-100"), size), partial(900, 999));
        assert_eq!(parse_range(Some("bytes=-5000"), size), partial(0, 999));
        assert_eq!(parse_range(Some("bytes=990-5000"), size), partial(990, 999));
        assert_eq!(parse_range(Some("bytes=999-999"), size), partial(999, 999));
        assert_eq!(parse_range(Some("Bytes=1-2"), size), partial(1, 2));
        assert_eq!(parse_range(Some(" bytes=1-2 "), size), partial(1, 2));
        assert_eq!(parse_range(Some("bytes=1-2,"), size), partial(1, 2));
        assert_eq!(ByteRange { start: 0, end: 99 }.len(), 100);
        assert_eq!(ByteRange { start: 0, end: 99 }.content_range(size), "bytes 0-99/1000");
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse_range(Some("bytes=1000-"), 1000), RangeDecision::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=1000-2000"), 1000), RangeDecision::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 1000), RangeDecision::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeDecision::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=99999999999999999999999-"), 1000), RangeDecision::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), RangeDecision::Full);
    }

    #[test]
    fn ignored_ranges() {
        for header in [
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=",
            "bytes=-",
            "bytes= 1 - 2",
            "bytes=+1-2",
            "items=0-1",
            "0-1",
            "bytes=--1",
            "bytes=0-18446744073709551616x",
        ] {
            assert_eq!(parse_range(Some(header), 1000), RangeDecision::Full, "{header}");
        }
        assert_eq!(parse_range(Some("bytes=0-99999999999999999999999"), 1000), partial(0, 999));
    }

    #[test]
    fn conditional_headers() {
        let etag = "\"b1-10-deadbeef\"";
        assert!(if_none_match_matches(etag, etag));
        assert!(if_none_match_matches("W/\"b1-10-deadbeef\"", etag));
        assert!(if_none_match_matches("\"x\", \"b1-10-deadbeef\"", etag));
        assert!(if_none_match_matches("*", etag));
        assert!(!if_none_match_matches("\"x\"", etag));
        assert!(!if_none_match_matches("garbage", etag));
        assert!(!if_none_match_matches("\"unterminated", etag));

        assert!(if_match_passes(etag, Some(etag)));
        assert!(if_match_passes("\"a\",\"b1-10-deadbeef\"", Some(etag)));
        assert!(if_match_passes("*", Some(etag)));
        assert!(!if_match_passes("*", None));
        assert!(!if_match_passes("W/\"b1-10-deadbeef\"", Some(etag)));
        assert!(!if_match_passes("nonsense", Some(etag)));

        let modified = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        assert!(if_range_allows_partial(None, etag, modified));
        assert!(if_range_allows_partial(Some(etag), etag, modified));
        assert!(!if_range_allows_partial(Some("\"other\""), etag, modified));
        assert!(!if_range_allows_partial(Some("W/\"b1-10-deadbeef\""), etag, modified));
        assert!(if_range_allows_partial(Some("Sun, 06 Nov 1994 08:49:37 GMT"), etag, modified));
        assert!(!if_range_allows_partial(Some("Sun, 06 Nov 1994 08:49:38 GMT"), etag, modified));
        assert!(!if_range_allows_partial(Some("yesterday"), etag, modified));
    }

    #[test]
    fn http_dates() {
        assert_eq!(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(format_http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(format_http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(format_http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
        for secs in [0, 59, 86_399, 951_782_400, 1_700_000_000, 4_102_444_800, 253_402_300_799] {
            assert_eq!(parse_http_date(&format_http_date(secs)), Some(secs), "{secs}");
        }
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Thu, 01 Jan 1969 00:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_disposition() {
        assert_eq!(
            content_disposition_attachment("report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        assert_eq!(
            content_disposition_attachment("résumé \"final\".pdf"),
            "attachment; filename=\"r_sum_ _final_.pdf\"; \
             filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf"
        );
        let evil = content_disposition_attachment("a\r\nSet-Cookie: x=1;.txt");
        assert!(!evil.contains('\r') && !evil.contains('\n'));
    }

    #[test]
    fn plans_conditional_and_range_answers() {
        let rep = Representation { size: 1000, etag: "\"abc\"", last_modified: 784111777, content_type: "text/plain" };
        let header =
            |plan: &ResponsePlan, name: &str| plan.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        let full = plan_response(&rep, ConditionalHeaders::default()).unwrap();
        assert_eq!((full.status, full.range, full.has_body), (200, None, true));
        assert_eq!(header(&full, "content-length").as_deref(), Some("1000"));
        assert_eq!(header(&full, "last-modified").as_deref(), Some("Sun, 06 Nov 1994 08:49:37 GMT"));

        let part =
            plan_response(&rep, ConditionalHeaders { range: Some("bytes=10-19"), ..Default::default() }).unwrap();
        assert_eq!(part.status, 206);
        assert_eq!(part.range, Some(ByteRange { start: 10, end: 19 }));
        assert_eq!(header(&part, "content-range").as_deref(), Some("bytes 10-19/1000"));
        assert_eq!(header(&part, "content-length").as_deref(), Some("10"));

        let stale = ConditionalHeaders { range: Some("bytes=10-19"), if_range: Some("\"old\""), ..Default::default() };
        assert_eq!(plan_response(&rep, stale).unwrap().status, 200);
        let fresh = ConditionalHeaders { range: Some("bytes=10-19"), if_range: Some("\"abc\""), ..Default::default() };
        assert_eq!(plan_response(&rep, fresh).unwrap().status, 206);

        let cached = plan_response(&rep, ConditionalHeaders { if_none_match: Some("\"abc\""), ..Default::default() });
        let cached = cached.unwrap();
        assert_eq!((cached.status, cached.has_body), (304, false));
        assert_eq!(header(&cached, "content-length"), None);

        let err = plan_response(&rep, ConditionalHeaders { range: Some("bytes=1000-"), ..Default::default() });
        assert_eq!(err.unwrap_err().status(), 416);
    }
}
