//! Aligning the probe's clock (CLOCK_MONOTONIC, `bpf_ktime_get_ns`) with capture
//! timestamps (CLOCK_REALTIME).
//!
//! Sample `MONOTONIC, REALTIME, MONOTONIC` many times and keep the tightest bracket: its
//! midpoint gives the offset, half its width bounds the error (under 1 µs here). Re-sample
//! periodically: NTP slews REALTIME.

use serde::Serialize;

/// One bracketed reading: monotonic before, realtime, monotonic after (all ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    pub mono_before: u64,
    pub real: u64,
    pub mono_after: u64,
}

/// REALTIME − MONOTONIC, with its error bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClockAlignment {
    /// Add this to a CLOCK_MONOTONIC reading to get unix time in ns.
    pub realtime_minus_monotonic_ns: i128,
    /// Half the width of the tightest bracket: the offset is right within this many ns.
    pub uncertainty_ns: u64,
}

impl ClockAlignment {
    /// Samples the clocks `n` times (at least once) and keeps the tightest pair.
    pub fn sample(n: usize) -> Option<Self> {
        Self::from_samples((0..n.max(1)).filter_map(|_| read_sample()))
    }

    /// The offset from the tightest well-ordered sample; `None` if there is none.
    pub fn from_samples(samples: impl IntoIterator<Item = ClockSample>) -> Option<Self> {
        let best = samples
            .into_iter()
            .filter(|s| s.mono_after >= s.mono_before)
            .min_by_key(|s| s.mono_after - s.mono_before)?;
        let width = best.mono_after - best.mono_before;
        let mid = i128::from(best.mono_before) + i128::from(width / 2);
        Some(Self {
            realtime_minus_monotonic_ns: i128::from(best.real) - mid,
            uncertainty_ns: width.div_ceil(2),
        })
    }

    /// Unix time in ns for a `bpf_ktime_get_ns` value (saturating at the i64 range).
    pub fn to_unix_ns(&self, ktime_ns: u64) -> i64 {
        let t = i128::from(ktime_ns) + self.realtime_minus_monotonic_ns;
        i64::try_from(t).unwrap_or(if t < 0 { i64::MIN } else { i64::MAX })
    }
}

fn now_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn read_sample() -> Option<ClockSample> {
    let mono_before = now_ns(libc::CLOCK_MONOTONIC)?;
    let real = now_ns(libc::CLOCK_REALTIME)?;
    let mono_after = now_ns(libc::CLOCK_MONOTONIC)?;
    Some(ClockSample {
        mono_before,
        real,
        mono_after,
    })
}

/// CLOCK_MONOTONIC now, in ns (the clock of [`super::SockEvent::ktime_ns`]).
pub fn monotonic_now_ns() -> Option<u64> {
    now_ns(libc::CLOCK_MONOTONIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(mono_before: u64, real: u64, mono_after: u64) -> ClockSample {
        ClockSample {
            mono_before,
            real,
            mono_after,
        }
    }

    #[test]
    fn tightest_bracket_wins() {
        let a = ClockAlignment::from_samples([
            s(100, 10_000_150, 200), // width 100
            s(300, 10_000_305, 310), // width 10, midpoint 305
            s(400, 10_000_900, 600),
        ])
        .unwrap();
        assert_eq!(a.realtime_minus_monotonic_ns, 10_000_000);
        assert_eq!(a.uncertainty_ns, 5);
        assert_eq!(a.to_unix_ns(1_000), 10_001_000);
    }

    #[test]
    fn odd_width_rounds_uncertainty_up() {
        let a = ClockAlignment::from_samples([s(10, 1_000, 13)]).unwrap();
        assert_eq!(a.uncertainty_ns, 2);
        assert_eq!(a.realtime_minus_monotonic_ns, 1_000 - 11);
    }

    #[test]
    fn backwards_samples_are_ignored() {
        assert_eq!(ClockAlignment::from_samples([s(10, 5, 9)]), None);
        assert_eq!(ClockAlignment::from_samples([]), None);
    }

    #[test]
    fn conversion_saturates_instead_of_overflowing() {
        let a = ClockAlignment {
            realtime_minus_monotonic_ns: i128::from(i64::MAX),
            uncertainty_ns: 0,
        };
        assert_eq!(a.to_unix_ns(u64::MAX), i64::MAX);
    }

    #[test]
    fn real_clocks_align_within_a_millisecond() {
        let a = ClockAlignment::sample(200).unwrap();
        assert!(a.uncertainty_ns < 1_000_000, "{a:?}");
        assert!(a.realtime_minus_monotonic_ns > 0);
    }
}
