//! Microsecond timestamps since the load generator started: what the
//! payloads carry, so latency is measured against one clock.

use std::{sync::OnceLock, time::Instant};

static START: OnceLock<Instant> = OnceLock::new();

pub fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Microseconds since the load generator started (the timestamps in payloads).
pub fn now_us() -> u64 {
    start().elapsed().as_micros() as u64
}

pub fn at_us(t: Instant) -> u64 {
    t.saturating_duration_since(start()).as_micros() as u64
}
