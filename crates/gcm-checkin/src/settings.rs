//! The settings a check-in response carries (docs/protocol.md §2.1): `setting`, a list of
//! name/value byte strings. Only `checkin_interval` is read; every setting stays
//! available as sent.

use std::time::Duration;

use bytes::Bytes;

use crate::proto::GservicesSetting;

/// The name of the setting that sets the re-check-in interval, in seconds.
pub const CHECKIN_INTERVAL_SETTING: &str = "checkin_interval";

/// The re-check-in interval when the server sets none: 2 days (docs/protocol.md §7.2).
pub const DEFAULT_CHECKIN_INTERVAL: Duration = Duration::from_secs(2 * 24 * 60 * 60);

/// The shortest re-check-in interval the server may set: 12 hours. A shorter one is
/// raised to this (docs/protocol.md §2.1).
pub const MIN_CHECKIN_INTERVAL: Duration = Duration::from_secs(12 * 60 * 60);

/// The settings of one check-in response.
///
/// ```
/// use std::time::Duration;
/// use gcm_checkin::CheckinSettings;
/// use gcm_checkin::proto::GservicesSetting;
///
/// let setting = |name: &'static str, value: &'static str| GservicesSetting {
///     name: name.into(),
///     value: value.into(),
/// };
/// let settings = CheckinSettings::from_proto(&[setting("checkin_interval", "259200")]);
/// assert_eq!(settings.checkin_interval, Some(Duration::from_secs(3 * 24 * 60 * 60)));
/// // Below the minimum of 12 hours: raised to it.
/// let short = CheckinSettings::from_proto(&[setting("checkin_interval", "60")]);
/// assert_eq!(short.checkin_interval, Some(Duration::from_secs(12 * 60 * 60)));
/// // Not a number: ignored.
/// let bad = CheckinSettings::from_proto(&[setting("checkin_interval", "soon")]);
/// assert_eq!(bad.checkin_interval, None);
/// assert_eq!(bad.get("checkin_interval"), Some(&b"soon"[..]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CheckinSettings {
    /// Every setting, in the order sent, as `(name, value)`.
    pub entries: Vec<(Bytes, Bytes)>,
    /// The re-check-in interval the server set ([`CHECKIN_INTERVAL_SETTING`], decimal
    /// seconds), raised to [`MIN_CHECKIN_INTERVAL`] when shorter (zero and negative
    /// values included). `None` when the server set none, or a value that is not a
    /// decimal 64-bit integer (surrounding ASCII whitespace is allowed), or the largest
    /// such integer (not an interval). When the setting is sent more than once, the last
    /// one counts.
    pub checkin_interval: Option<Duration>,
}

impl CheckinSettings {
    /// Reads the settings of a decoded `AndroidCheckinResponse`. Never fails: a value
    /// that cannot be read is left out of the typed fields (and kept in
    /// [`entries`](Self::entries)).
    pub fn from_proto(settings: &[GservicesSetting]) -> Self {
        let entries: Vec<(Bytes, Bytes)> = settings
            .iter()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect();
        let checkin_interval = last(&entries, CHECKIN_INTERVAL_SETTING).and_then(parse_interval);
        Self {
            entries,
            checkin_interval,
        }
    }

    /// The value of the setting `name` (the last one when sent more than once).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        last(&self.entries, name)
    }

    /// Whether the response carried no settings.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The value of the last entry named `name`.
fn last<'a>(entries: &'a [(Bytes, Bytes)], name: &str) -> Option<&'a [u8]> {
    entries
        .iter()
        .rev()
        .find(|(n, _)| n.as_ref() == name.as_bytes())
        .map(|(_, v)| v.as_ref())
}

/// Decimal seconds as an interval, raised to the minimum; `None` for anything else.
fn parse_interval(value: &[u8]) -> Option<Duration> {
    let seconds: i64 = std::str::from_utf8(value.trim_ascii()).ok()?.parse().ok()?;
    if seconds == i64::MAX {
        return None;
    }
    let seconds = u64::try_from(seconds).unwrap_or(0);
    Some(Duration::from_secs(seconds).max(MIN_CHECKIN_INTERVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&'static str, &'static [u8])]) -> CheckinSettings {
        let proto: Vec<GservicesSetting> = pairs
            .iter()
            .map(|(name, value)| GservicesSetting {
                name: Bytes::from_static(name.as_bytes()),
                value: Bytes::from_static(value),
            })
            .collect();
        CheckinSettings::from_proto(&proto)
    }

    fn interval(value: &'static [u8]) -> Option<Duration> {
        settings(&[(CHECKIN_INTERVAL_SETTING, value)]).checkin_interval
    }

    #[test]
    fn reads_the_checkin_interval_leniently() {
        let hours = |h: u64| Some(Duration::from_secs(h * 60 * 60));
        assert_eq!(interval(b"172800"), hours(48));
        assert_eq!(interval(b" 86400\n"), hours(24));
        assert_eq!(interval(b"+43200"), hours(12));
        // Below the minimum, zero and negative: raised to 12 h.
        assert_eq!(interval(b"43199"), hours(12));
        assert_eq!(interval(b"0"), hours(12));
        assert_eq!(interval(b"-5"), hours(12));
        assert_eq!(interval(b"-9223372036854775808"), hours(12));
        // Large but representable: kept.
        assert_eq!(
            interval(b"9223372036854775806"),
            Some(Duration::from_secs(9_223_372_036_854_775_806))
        );
        // Not an interval: ignored.
        for bad in [
            &b""[..],
            b"   ",
            b"2d",
            b"1.5",
            b"0x10",
            b"9223372036854775807",
            b"9223372036854775808",
            b"\xff\xfe",
            b"12 00",
            "\u{a0}86400".as_bytes(),
        ] {
            assert_eq!(interval(bad), None, "{bad:?}");
        }
        assert_eq!(settings(&[]).checkin_interval, None);
        assert!(settings(&[]).is_empty());
    }

    #[test]
    fn keeps_every_setting_and_the_last_of_a_name_counts() {
        let s = settings(&[
            ("gcm_hostname", b"mtalk.example"),
            (CHECKIN_INTERVAL_SETTING, b"100000"),
            ("CHECKIN_INTERVAL", b"1"),
            (CHECKIN_INTERVAL_SETTING, b"200000"),
        ]);
        assert_eq!(s.checkin_interval, Some(Duration::from_secs(200_000)));
        assert_eq!(s.get("gcm_hostname"), Some(&b"mtalk.example"[..]));
        assert_eq!(s.get(CHECKIN_INTERVAL_SETTING), Some(&b"200000"[..]));
        assert_eq!(s.get("missing"), None);
        assert_eq!(s.entries.len(), 4);
        // A bad last value hides a good earlier one: the server's latest word counts.
        let s = settings(&[
            (CHECKIN_INTERVAL_SETTING, b"100000"),
            (CHECKIN_INTERVAL_SETTING, b"never"),
        ]);
        assert_eq!(s.checkin_interval, None);
    }
}
