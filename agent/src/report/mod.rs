//! Reports: human text ([`text`]) and the versioned JSON schema ([`json`],
//! `docs/report-schema.md`).

pub mod html;
pub mod json;
pub mod redact;
pub mod sides;
pub mod text;

/// How a report is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Each verdict's evidence timeline (text; JSON always carries it).
    pub verbose: bool,
    /// Query values and user information in request targets as captured, instead of
    /// [`redact::REDACTED`].
    pub show_query: bool,
    /// How many verdicts the text report lists (JSON always holds every one).
    pub limit: Limit,
}

/// How many verdicts of each group (cause, subcause, upstream) the text report lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The clearest this many of each group (`--limit N`; [`EXAMPLES`] by default).
    PerGroup(usize),
    /// Every verdict, and the fix for every proxy and upstream tracer knows (`--all`).
    All,
}

/// Verdicts the text report shows of each group by default.
pub const EXAMPLES: usize = 2;

impl Default for Limit {
    fn default() -> Self {
        Limit::PerGroup(EXAMPLES)
    }
}

impl Limit {
    /// The most verdicts listed of one group.
    #[must_use]
    pub fn per_group(self) -> usize {
        match self {
            Limit::PerGroup(n) => n,
            Limit::All => usize::MAX,
        }
    }
}

impl Options {
    /// `s` as this report shows it: with its request targets redacted unless asked not to.
    #[must_use]
    pub fn text<'a>(&self, s: &'a str) -> std::borrow::Cow<'a, str> {
        if self.show_query {
            std::borrow::Cow::Borrowed(s)
        } else {
            redact::text(s)
        }
    }

    /// A request target as this report shows it.
    #[must_use]
    pub fn target<'a>(&self, t: &'a str) -> std::borrow::Cow<'a, str> {
        if self.show_query {
            std::borrow::Cow::Borrowed(t)
        } else {
            redact::target(t)
        }
    }
}

/// What the input layer says about the capture itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    pub packets: u64,
    /// Packets the capture lost or never had, as far as sequence numbers show (gaps); for
    /// a sparse capture, whose gaps are deliberate, only what the kernel reports dropped.
    pub dropped_or_missing: u64,
    /// The packets are a sparse capture's selection (what `tracer capture` does by default).
    pub sparse: bool,
    /// The capture holds one side of the proxy only (see [`sides`]).
    pub one_side: Option<sides::OneSide>,
}

/// RFC 3339 UTC with microseconds, e.g. `2026-11-25T20:34:00.123456Z`.
#[must_use]
pub fn rfc3339(ts_ns: i64) -> String {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let micros = ts_ns.rem_euclid(1_000_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_with_microseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_795_638_869_996_817_800),
            "2026-11-25T20:34:29.996817Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_001_000),
            "2000-02-29T00:00:00.000001Z"
        );
    }
}
