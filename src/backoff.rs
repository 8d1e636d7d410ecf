//! Exponential backoff with full jitter, shared by reconnects and secret fetches.

use std::time::Duration;

use rand::Rng;

/// Returns a random delay in `0..=min(max, initial * 2^(attempt-1))`
/// ("full jitter"), so clients that failed together retry apart.
pub fn full_jitter(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let cap = initial.saturating_mul(1u32 << exponent).min(max);
    let millis = cap.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_capped_and_grows() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for _ in 0..200 {
            assert!(full_jitter(1, initial, max) <= initial);
            assert!(full_jitter(3, initial, max) <= Duration::from_millis(400));
            assert!(full_jitter(30, initial, max) <= max);
        }
        let late: Vec<Duration> = (0..200).map(|_| full_jitter(10, initial, max)).collect();
        assert!(late.iter().any(|delay| *delay > Duration::from_millis(400)));
    }
}
