//! The wall clock, read only at the edges: the ext_authz service, the commands and
//! the tests. Everything below takes the time as an argument, so a test decides at
//! any moment it likes, without sleeping.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
