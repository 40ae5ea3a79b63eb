//! When a running download writes its record, and when it must give up.
//!
//! Writing the record per received chunk would turn a fast transfer into thousands of
//! key-value writes; [`ProgressThrottle`] limits writes to one per [`REPORT_EVERY_BYTES`] or
//! per [`REPORT_EVERY_MS`] (whichever comes first, and only if something changed), plus a
//! heartbeat every [`HEARTBEAT_INTERVAL_SECS`] while nothing arrives, so a stalled but alive
//! transfer is not mistaken for a dead worker. [`TransferDeadline`] is the whole transfer's
//! `timeout`. Times are monotonic milliseconds supplied by the caller.

use crate::error::{ApiError, ErrorCode};

/// Report progress after at least this many new bytes.
pub const REPORT_EVERY_BYTES: u64 = 16 * 1024 * 1024;
/// Report progress at least this often while bytes keep arriving.
pub const REPORT_EVERY_MS: u64 = 250;
/// How often a running download reads its record to notice a cancel when no write has done
/// so (every record write is a compare-and-swap that sees a cancel anyway). Keeps "cancel
/// stops the transfer within a second" true for a stalled server.
pub const CANCEL_CHECK_EVERY_MS: u64 = 500;
/// How often a running download proves it is alive, in seconds. With
/// [`STALE_AFTER_INTERVALS`](super::record::STALE_AFTER_INTERVALS) this decides how soon a
/// dead worker's record is declared interrupted.
pub const HEARTBEAT_INTERVAL_SECS: u64 = 5;

/// Decides when to write progress and heartbeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressThrottle {
    last_write_ms: u64,
    last_reported_bytes: u64,
    last_look_ms: u64,
}

impl ProgressThrottle {
    /// A throttle for a transfer starting at `now_ms` (the `starting` record counts as the
    /// first write).
    pub fn new(now_ms: u64) -> ProgressThrottle {
        ProgressThrottle { last_write_ms: now_ms, last_reported_bytes: 0, last_look_ms: now_ms }
    }

    /// Whether to write progress now that `bytes_total` bytes have arrived: at least
    /// [`REPORT_EVERY_BYTES`] new bytes, or [`REPORT_EVERY_MS`] elapsed and the count changed.
    /// Returning `true` assumes the caller writes, and restarts both measures.
    pub fn should_report(&mut self, now_ms: u64, bytes_total: u64) -> bool {
        let new_bytes = bytes_total.saturating_sub(self.last_reported_bytes);
        let elapsed = now_ms.saturating_sub(self.last_write_ms);
        let due =
            new_bytes >= REPORT_EVERY_BYTES || (elapsed >= REPORT_EVERY_MS && bytes_total != self.last_reported_bytes);
        if due {
            self.last_write_ms = now_ms;
            self.last_look_ms = now_ms;
            self.last_reported_bytes = bytes_total;
        }
        due
    }

    /// Whether a heartbeat is due: nothing was written for `interval_ms`. Returning `true`
    /// assumes the caller writes one. Progress writes count as heartbeats.
    pub fn heartbeat_due(&mut self, now_ms: u64, interval_ms: u64) -> bool {
        let due = now_ms.saturating_sub(self.last_write_ms) >= interval_ms;
        if due {
            self.last_write_ms = now_ms;
            self.last_look_ms = now_ms;
        }
        due
    }

    /// Whether to read the record for a cancel: nothing has looked at it for
    /// [`CANCEL_CHECK_EVERY_MS`]. Returning `true` assumes the caller reads it; writes count.
    pub fn cancel_check_due(&mut self, now_ms: u64) -> bool {
        let due = now_ms.saturating_sub(self.last_look_ms) >= CANCEL_CHECK_EVERY_MS;
        if due {
            self.last_look_ms = now_ms;
        }
        due
    }

    /// Milliseconds until a heartbeat is due; 0 when overdue.
    fn until_heartbeat_ms(&self, now_ms: u64, interval_ms: u64) -> u64 {
        (self.last_write_ms.saturating_add(interval_ms)).saturating_sub(now_ms)
    }

    /// How long the worker may wait for body bytes before it must look up again (heartbeat or
    /// cancel check); 0 when one is overdue.
    pub fn until_next_duty_ms(&self, now_ms: u64, heartbeat_interval_ms: u64) -> u64 {
        let until_cancel_check = self.last_look_ms.saturating_add(CANCEL_CHECK_EVERY_MS).saturating_sub(now_ms);
        self.until_heartbeat_ms(now_ms, heartbeat_interval_ms).min(until_cancel_check)
    }
}

/// The whole transfer's deadline (`timeout`), covering connect, redirects, headers and body,
/// or the host's invocation budget when that comes first (a hosted target ends a handler at
/// 30 s; setting `download_invocation_secs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferDeadline {
    deadline_ms: u64,
    timeout_secs: u64,
    /// The invocation budget, when it is what ends the transfer (shorter than the timeout).
    budget_secs: Option<u64>,
}

impl TransferDeadline {
    /// The deadline of an invocation starting at `now_ms` that goes on with a download started
    /// `elapsed_secs` ago (earlier slices count against its timeout); `budget_secs` counts
    /// from now.
    pub fn new(now_ms: u64, elapsed_secs: u64, timeout_secs: u64, budget_secs: Option<u64>) -> Self {
        let left_secs = timeout_secs.saturating_sub(elapsed_secs);
        let budget_secs = budget_secs.filter(|budget| *budget < left_secs);
        let secs = budget_secs.unwrap_or(left_secs);
        TransferDeadline { deadline_ms: now_ms.saturating_add(secs.saturating_mul(1000)), timeout_secs, budget_secs }
    }

    /// Milliseconds left, or `None` once it has passed: use it to bound every wait (connect,
    /// first byte, each body read), so even a server trickling one byte a second is cut off.
    pub fn remaining_ms(&self, now_ms: u64) -> Option<u64> {
        self.deadline_ms.checked_sub(now_ms).filter(|left| *left > 0)
    }

    /// `DOWNLOAD_TIMEOUT` once the deadline has passed.
    pub fn check(&self, now_ms: u64) -> Result<(), ApiError> {
        match self.remaining_ms(now_ms) {
            Some(_) => Ok(()),
            None => Err(self.expired()),
        }
    }

    /// The `DOWNLOAD_TIMEOUT` error this deadline produces, naming which limit ended it.
    pub fn expired(&self) -> ApiError {
        let message = match self.budget_secs {
            None => format!("the download did not finish within its {} s timeout", self.timeout_secs),
            Some(budget) => format!(
                "the download did not finish within this host's {budget} s invocation budget \
                 (download_invocation_secs; the host stops a handler at its time limit); set \
                 download_slice_secs below it to carry downloads across invocations"
            ),
        };
        ApiError::new(ErrorCode::DownloadTimeout, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_16_mib() {
        let mut throttle = ProgressThrottle::new(0);
        assert!(!throttle.should_report(1, REPORT_EVERY_BYTES - 1));
        assert!(throttle.should_report(2, REPORT_EVERY_BYTES));
        assert!(!throttle.should_report(3, 2 * REPORT_EVERY_BYTES - 1));
        assert!(throttle.should_report(4, 10 * REPORT_EVERY_BYTES));
        // A fast transfer of 100 MiB in 0.1 ms steps of 64 KiB writes 6 times, not 1600: each
        // write is a compare-and-swap round trip that would otherwise throttle the transfer.
        let mut throttle = ProgressThrottle::new(0);
        let writes = (1..=1600u64).filter(|step| throttle.should_report(*step / 10, step * 64 * 1024)).count();
        assert_eq!(writes, 6);
    }

    #[test]
    fn reports_every_250_ms_when_something_changed() {
        let mut throttle = ProgressThrottle::new(1000);
        assert!(!throttle.should_report(1249, 10));
        assert!(throttle.should_report(1250, 10));
        assert!(!throttle.should_report(1600, 10), "nothing new");
        assert!(throttle.should_report(1601, 11));
        assert!(!throttle.should_report(1700, 12));
        // A slow trickle writes at most four times a second.
        let mut throttle = ProgressThrottle::new(0);
        let writes = (1..=10_000u64).filter(|ms| throttle.should_report(*ms, *ms)).count();
        assert_eq!(writes, 40);
    }

    #[test]
    fn zero_byte_progress_is_not_reported() {
        let mut throttle = ProgressThrottle::new(0);
        assert!(!throttle.should_report(10_000, 0));
    }

    #[test]
    fn clocks_going_backwards_do_not_panic_or_report() {
        let mut throttle = ProgressThrottle::new(5000);
        assert!(!throttle.should_report(10, 1));
        assert!(!throttle.heartbeat_due(10, 1000));
        assert_eq!(throttle.until_heartbeat_ms(10, 1000), 5990);
    }

    #[test]
    fn heartbeats_fill_silences() {
        let interval = HEARTBEAT_INTERVAL_SECS * 1000;
        let mut throttle = ProgressThrottle::new(0);
        assert_eq!(throttle.until_heartbeat_ms(1000, interval), 4000);
        assert!(!throttle.heartbeat_due(4999, interval));
        assert!(throttle.heartbeat_due(5000, interval));
        assert!(!throttle.heartbeat_due(5001, interval));
        // A progress write counts as a heartbeat.
        assert!(throttle.should_report(9000, REPORT_EVERY_BYTES));
        assert!(!throttle.heartbeat_due(13_999, interval));
        assert!(throttle.heartbeat_due(14_000, interval));
        assert_eq!(throttle.until_heartbeat_ms(20_000, interval), 0);
    }

    #[test]
    fn cancel_checks_every_half_second_unless_a_write_looked() {
        let interval = HEARTBEAT_INTERVAL_SECS * 1000;
        let mut throttle = ProgressThrottle::new(0);
        assert_eq!(throttle.until_next_duty_ms(0, interval), CANCEL_CHECK_EVERY_MS);
        assert!(!throttle.cancel_check_due(499));
        assert!(throttle.cancel_check_due(500));
        assert!(!throttle.cancel_check_due(999));
        assert_eq!(throttle.until_next_duty_ms(600, interval), 400);
        assert!(throttle.should_report(900, 1));
        assert!(!throttle.cancel_check_due(1399), "the progress write saw the record");
        assert!(throttle.cancel_check_due(1400));
        assert!(throttle.heartbeat_due(10_000, interval));
        assert!(!throttle.cancel_check_due(10_100));
        assert_eq!(throttle.until_next_duty_ms(20_000, interval), 0);
        // Over a stalled minute: ~120 looks, 12 heartbeats; never a wait over 500 ms.
        let mut throttle = ProgressThrottle::new(0);
        let (mut looks, mut beats, mut now) = (0, 0, 0);
        while now < 60_000 {
            now += throttle.until_next_duty_ms(now, interval).max(1);
            beats += usize::from(throttle.heartbeat_due(now, interval));
            looks += usize::from(throttle.cancel_check_due(now));
        }
        assert_eq!(beats, 12);
        assert!((100..=120).contains(&looks), "{looks}");
    }

    #[test]
    fn deadlines() {
        let deadline = TransferDeadline::new(1000, 0, 2, None);
        assert_eq!(deadline.remaining_ms(1000), Some(2000));
        assert_eq!(deadline.remaining_ms(2999), Some(1));
        assert_eq!(deadline.remaining_ms(3000), None);
        assert_eq!(deadline.remaining_ms(u64::MAX), None);
        assert!(deadline.check(2500).is_ok());
        let err = deadline.check(3000).unwrap_err();
        assert_eq!(err.code, ErrorCode::DownloadTimeout);
        assert_eq!(err.status(), 504);
        assert!(err.message.contains("2 s"));
        let far = TransferDeadline::new(u64::MAX - 1, 0, u64::MAX, None);
        assert_eq!(far.remaining_ms(0), Some(u64::MAX));
        // A shorter invocation budget is the deadline, and its error says so.
        let budgeted = TransferDeadline::new(1000, 0, 600, Some(25));
        assert_eq!(budgeted.remaining_ms(1000), Some(25_000));
        // A later slice: earlier ones count against the timeout, the budget counts from now.
        assert_eq!(TransferDeadline::new(1000, 590, 600, Some(25)).remaining_ms(1000), Some(10_000));
        assert_eq!(TransferDeadline::new(1000, 100, 600, Some(25)).remaining_ms(1000), Some(25_000));
        assert_eq!(TransferDeadline::new(1000, 700, 600, None).remaining_ms(1000), None, "past its timeout");
        let err = budgeted.check(26_000).unwrap_err();
        assert!(err.message.contains("25 s invocation budget"), "{}", err.message);
        assert_eq!(
            TransferDeadline::new(1000, 0, 10, Some(25)),
            TransferDeadline::new(1000, 0, 10, None),
            "a longer budget"
        );
    }
}
