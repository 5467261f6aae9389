//! Quantities users write in manifests: memory sizes, CPU amounts and durations.
//!
//! All parsers are hand-written, reject negative values and overflow, and never panic.

use std::time::Duration;

/// What users may write for a memory size.
const MEMORY_SYNTAX: &str = "bytes or a number with a unit, e.g. 268435456, 256Mi, 1Gi, 512M, 1g";
/// What users may write for a CPU amount.
const CPU_SYNTAX: &str = "cores or millicores, e.g. 2, 0.5, 500m";
/// What users may write for a duration.
const DURATION_SYNTAX: &str =
    "numbers with units ns, us, ms, s, m, h, d, e.g. 10s, 1m30s, 1.5s, 500ms, 2h, 7d";

/// Most fractional digits a number may carry (more could not change a whole byte or millicore
/// of any realistic value and would risk overflow in the exact arithmetic).
const MAX_FRACTION_DIGITS: usize = 18;

/// Why a quantity could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Nothing was written.
    #[error("{what} is empty: write {expected}")]
    Empty {
        /// memory, cpu or duration.
        what: &'static str,
        /// The accepted syntax.
        expected: &'static str,
    },
    /// A minus sign.
    #[error("{what} {input} is negative: use 0 or more")]
    Negative {
        /// memory, cpu or duration.
        what: &'static str,
        /// The input, quoted and shortened.
        input: String,
    },
    /// The value does not fit the result type.
    #[error("{what} {input} is too large: the limit is {limit}")]
    Overflow {
        /// memory, cpu or duration.
        what: &'static str,
        /// The input, quoted and shortened.
        input: String,
        /// The largest accepted value.
        limit: &'static str,
    },
    /// The number is followed by a unit this parser does not know.
    #[error("{what} {input} has unknown unit {unit}: write {expected}")]
    UnknownUnit {
        /// memory, cpu or duration.
        what: &'static str,
        /// The input, quoted and shortened.
        input: String,
        /// The unit, quoted.
        unit: String,
        /// The accepted syntax.
        expected: &'static str,
    },
    /// The text is not a number with a unit.
    #[error("{what} {input} is not valid ({reason}): write {expected}")]
    Invalid {
        /// memory, cpu or duration.
        what: &'static str,
        /// The input, quoted and shortened.
        input: String,
        /// What is wrong.
        reason: &'static str,
        /// The accepted syntax.
        expected: &'static str,
    },
}

/// Quotes user input for an error message: escaped (so it stays on one line) and at most
/// 64 characters long.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}...")
    }
}

/// A non-negative decimal number `mantissa / 10^scale`, kept exact.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    mantissa: u128,
    scale: u32,
}

/// Why a number failed to parse.
enum NumberError {
    Syntax(&'static str),
    Overflow,
}

impl Decimal {
    /// Parses `123`, `1.5`, `.5` or `1.`; at least one digit, at most one dot.
    fn parse(num: &str) -> Result<Decimal, NumberError> {
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(NumberError::Syntax("missing number"));
        }
        if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NumberError::Syntax("malformed number"));
        }
        // Trailing zeros of the fraction carry no value; dropping them keeps `1.000000…` exact.
        let frac = frac.trim_end_matches('0');
        if frac.len() > MAX_FRACTION_DIGITS {
            return Err(NumberError::Syntax("more than 18 decimal places"));
        }
        let mut mantissa: u128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(b - b'0')))
                .ok_or(NumberError::Overflow)?;
        }
        Ok(Decimal {
            mantissa,
            scale: frac.len() as u32,
        })
    }

    /// `self * unit`, rounded up to a whole number; `None` on overflow.
    fn times_ceil(self, unit: u128) -> Option<u128> {
        let num = self.mantissa.checked_mul(unit)?;
        let den = 10u128.pow(self.scale);
        Some(num.div_ceil(den))
    }
}

/// Splits `s` into its leading number (`[0-9.]*`) and the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// The multiplier of a memory unit, see [`parse_memory`].
fn memory_unit(unit: &str) -> Option<u128> {
    const K: u128 = 1000;
    const KI: u128 = 1024;
    // The bare Kubernetes suffixes are decimal.
    let decimal = match unit {
        "" => Some(1),
        "k" | "K" => Some(K),
        "M" => Some(K.pow(2)),
        "G" => Some(K.pow(3)),
        "T" => Some(K.pow(4)),
        "P" => Some(K.pow(5)),
        "E" => Some(K.pow(6)),
        _ => None,
    };
    if decimal.is_some() {
        return decimal;
    }
    // Everything else follows Docker (case-insensitive, 1024-based): b, k[i][b], m[i][b], ...
    let lower = unit.to_ascii_lowercase();
    if lower == "b" {
        return Some(1);
    }
    let mut chars = lower.chars();
    let power = match chars.next()? {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    match chars.as_str() {
        "" | "i" | "b" | "ib" => Some(KI.pow(power)),
        _ => None,
    }
}

/// Parses a memory size into bytes.
///
/// The input is a non-negative decimal number (`1`, `1.5`, `.5`; at most 18 decimal places),
/// optionally one space, then an optional unit. Surrounding whitespace is ignored. Units:
///
/// * none, `b` or `B`: bytes;
/// * `k`, `K`, `M`, `G`, `T`, `P`, `E` exactly as written: powers of 1000 (Kubernetes);
/// * `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`: powers of 1024 (Kubernetes);
/// * every other spelling Docker accepts, in any case: powers of 1024 (`docker run -m`), so
///   lower-case `256m`, `1g`, `2t` are MiB, GiB, TiB, and `KB`, `MB`, `GB`, `mb`, `MiB`, `gib`
///   are 1024-based too. Docker-style `KB`/`MB`/`GB` are binary because that is what Docker
///   allocates for them; write `M`/`G` for decimal megabytes/gigabytes.
///
/// The only clash between the two conventions is `k`: it is 1000 here, as in Kubernetes.
/// Fractions round up to the next whole byte (`0.1Ki` = 103). Negative values and results
/// above `u64::MAX` are errors.
pub fn parse_memory(s: &str) -> Result<u64, QuantityError> {
    const WHAT: &str = "memory";
    let t = s.trim();
    if t.is_empty() {
        return Err(QuantityError::Empty {
            what: WHAT,
            expected: MEMORY_SYNTAX,
        });
    }
    if t.starts_with('-') {
        return Err(QuantityError::Negative {
            what: WHAT,
            input: shown(s),
        });
    }
    let (num, unit) = split_number(t);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let dec = Decimal::parse(num)
        .map_err(|e| number_error(WHAT, s, e, MEMORY_SYNTAX, "2^64-1 bytes (16Ei)"))?;
    let mult = memory_unit(unit).ok_or_else(|| QuantityError::UnknownUnit {
        what: WHAT,
        input: shown(s),
        unit: shown(unit),
        expected: MEMORY_SYNTAX,
    })?;
    to_u64(dec.times_ceil(mult), WHAT, s, "2^64-1 bytes (16Ei)")
}

/// Parses a CPU amount into millicores.
///
/// `2` or `0.5` are cores (a non-negative decimal number, at most 18 decimal places); `500m`
/// is millicores. Surrounding whitespace is ignored. Fractions of a millicore round up
/// (`0.0001` = `1m`), as Kubernetes does. Negative values and results above `u64::MAX`
/// millicores are errors.
pub fn parse_cpu(s: &str) -> Result<u64, QuantityError> {
    const WHAT: &str = "cpu";
    const LIMIT: &str = "2^64-1 millicores";
    let t = s.trim();
    if t.is_empty() {
        return Err(QuantityError::Empty {
            what: WHAT,
            expected: CPU_SYNTAX,
        });
    }
    if t.starts_with('-') {
        return Err(QuantityError::Negative {
            what: WHAT,
            input: shown(s),
        });
    }
    let (num, unit) = split_number(t);
    let dec = Decimal::parse(num).map_err(|e| number_error(WHAT, s, e, CPU_SYNTAX, LIMIT))?;
    let mult = match unit {
        "" => 1000,
        "m" => 1,
        _ => {
            return Err(QuantityError::UnknownUnit {
                what: WHAT,
                input: shown(s),
                unit: shown(unit),
                expected: CPU_SYNTAX,
            })
        }
    };
    to_u64(dec.times_ceil(mult), WHAT, s, LIMIT)
}

/// Parses a duration as Go's `time.ParseDuration` does, without signs: one or more
/// `<number><unit>` pairs (`1m30s`, `1.5h`, `500ms`), units `ns`, `us` (or `µs`), `ms`, `s`,
/// `m`, `h`, and (beyond Go) `d` for 24 hours. A lone `0` is zero. Surrounding whitespace is ignored; fractions of a
/// nanosecond round up. Negative values and totals above `u64::MAX` nanoseconds (about 584
/// years) are errors.
pub fn parse_duration(s: &str) -> Result<Duration, QuantityError> {
    const WHAT: &str = "duration";
    const LIMIT: &str = "2^64-1 nanoseconds (about 584 years)";
    let t = s.trim();
    if t.is_empty() {
        return Err(QuantityError::Empty {
            what: WHAT,
            expected: DURATION_SYNTAX,
        });
    }
    if t.starts_with('-') {
        return Err(QuantityError::Negative {
            what: WHAT,
            input: shown(s),
        });
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = |reason| QuantityError::Invalid {
        what: WHAT,
        input: shown(s),
        reason,
        expected: DURATION_SYNTAX,
    };
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let (num, after) = split_number(rest);
        if num.is_empty() {
            return Err(invalid("expected a number"));
        }
        let dec =
            Decimal::parse(num).map_err(|e| number_error(WHAT, s, e, DURATION_SYNTAX, LIMIT))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let nanos: u128 = match unit {
            "" => return Err(invalid("a number has no unit")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => {
                return Err(QuantityError::UnknownUnit {
                    what: WHAT,
                    input: shown(s),
                    unit: shown(unit),
                    expected: DURATION_SYNTAX,
                })
            }
        };
        total = dec
            .times_ceil(nanos)
            .and_then(|n| total.checked_add(n))
            .filter(|n| *n <= u128::from(u64::MAX))
            .ok_or_else(|| QuantityError::Overflow {
                what: WHAT,
                input: shown(s),
                limit: LIMIT,
            })?;
        rest = next;
    }
    Ok(Duration::from_nanos(total as u64))
}

fn number_error(
    what: &'static str,
    input: &str,
    e: NumberError,
    expected: &'static str,
    limit: &'static str,
) -> QuantityError {
    match e {
        NumberError::Syntax(reason) => QuantityError::Invalid {
            what,
            input: shown(input),
            reason,
            expected,
        },
        NumberError::Overflow => QuantityError::Overflow {
            what,
            input: shown(input),
            limit,
        },
    }
}

fn to_u64(
    v: Option<u128>,
    what: &'static str,
    input: &str,
    limit: &'static str,
) -> Result<u64, QuantityError> {
    v.and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| QuantityError::Overflow {
            what,
            input: shown(input),
            limit,
        })
}

/// Formats bytes in the shortest exact form [`parse_memory`] reads back: the largest
/// 1024-based unit that divides it (`256Mi`), else the largest 1000-based one (`1G`), else
/// plain bytes.
pub fn format_memory(bytes: u64) -> String {
    const BINARY: [(&str, u64); 6] = [
        ("Ei", 1 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    const DECIMAL: [(&str, u64); 6] = [
        ("E", 1_000_000_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("T", 1_000_000_000_000),
        ("G", 1_000_000_000),
        ("M", 1_000_000),
        ("k", 1_000),
    ];
    if bytes == 0 {
        return "0".to_string();
    }
    for (suffix, unit) in BINARY.iter().chain(DECIMAL.iter()) {
        if bytes.is_multiple_of(*unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Formats millicores as [`parse_cpu`] reads them back: whole cores as `2`, anything else
/// as millicores (`1500m`).
pub fn format_cpu(millicores: u64) -> String {
    if millicores.is_multiple_of(1000) {
        (millicores / 1000).to_string()
    } else {
        format!("{millicores}m")
    }
}

/// Formats a duration as [`parse_duration`] reads it back: `1h30m`, `1s500ms`, `0s`.
/// Durations above `u64::MAX` nanoseconds are formatted too but do not parse back.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let secs = d.as_secs();
    let sub = d.subsec_nanos();
    let parts = [
        (secs / 3600, "h"),
        ((secs / 60) % 60, "m"),
        (secs % 60, "s"),
        (u64::from(sub / 1_000_000), "ms"),
        (u64::from((sub / 1_000) % 1_000), "us"),
        (u64::from(sub % 1_000), "ns"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n != 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1024", 1024),
            ("  12 ", 12),
            ("100b", 100),
            ("100B", 100),
            ("1k", 1000),
            ("1K", 1000),
            ("1M", 1_000_000),
            ("2G", 2_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("1Ki", 1024),
            ("256Mi", 256 << 20),
            ("1Gi", 1 << 30),
            ("1Ti", 1 << 40),
            ("1Pi", 1 << 50),
            ("1Ei", 1 << 60),
            ("256m", 256 << 20),
            ("1g", 1 << 30),
            ("1t", 1 << 40),
            ("1KB", 1024),
            ("1kb", 1024),
            ("512MB", 512 << 20),
            ("1GB", 1 << 30),
            ("1gb", 1 << 30),
            ("1MiB", 1 << 20),
            ("1gib", 1 << 30),
            ("1mi", 1 << 20),
            ("1 Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("0.5Ki", 512),
            ("0.1Ki", 103),
            (".5Ki", 512),
            ("1.000000000000000000000000Gi", 1 << 30),
            ("15Ei", 15 << 60),
            ("18446744073709551615", u64::MAX),
        ];
        for (s, want) in cases {
            assert_eq!(parse_memory(s), Ok(*want), "{s}");
        }
    }

    #[test]
    fn memory_errors() {
        assert!(matches!(parse_memory(""), Err(QuantityError::Empty { .. })));
        assert!(matches!(
            parse_memory("  "),
            Err(QuantityError::Empty { .. })
        ));
        assert!(matches!(
            parse_memory("-1"),
            Err(QuantityError::Negative { .. })
        ));
        assert!(matches!(
            parse_memory("-1Gi"),
            Err(QuantityError::Negative { .. })
        ));
        assert!(matches!(
            parse_memory("16Ei"),
            Err(QuantityError::Overflow { .. })
        ));
        assert!(matches!(
            parse_memory("18446744073709551616"),
            Err(QuantityError::Overflow { .. })
        ));
        assert!(matches!(
            parse_memory("999999999999999999999999999999999999999999Ei"),
            Err(QuantityError::Overflow { .. })
        ));
        for bad in ["Gi", "1..5", "1.2.3", ".", "+1", "1 2", "0x10", "1e3"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        for unit in ["1Z", "1Gx", "1gibb", "1iB", "1mm", "1  Gi"] {
            assert!(
                matches!(parse_memory(unit), Err(QuantityError::UnknownUnit { .. })),
                "{unit}: {:?}",
                parse_memory(unit)
            );
        }
        let e = parse_memory("12 parsecs").unwrap_err().to_string();
        assert_eq!(
            e,
            "memory \"12 parsecs\" has unknown unit \"parsecs\": write bytes or a number with a unit, e.g. 268435456, 256Mi, 1Gi, 512M, 1g"
        );
        assert_eq!(
            parse_memory("-5Mi").unwrap_err().to_string(),
            "memory \"-5Mi\" is negative: use 0 or more"
        );
    }

    #[test]
    fn memory_format() {
        assert_eq!(format_memory(0), "0");
        assert_eq!(format_memory(1), "1");
        assert_eq!(format_memory(1024), "1Ki");
        assert_eq!(format_memory(256 << 20), "256Mi");
        assert_eq!(format_memory(1 << 30), "1Gi");
        assert_eq!(format_memory(1_000_000_000), "1G");
        assert_eq!(format_memory(1500), "1500");
        assert_eq!(format_memory(3000), "3k");
        for n in [
            0,
            1,
            999,
            1000,
            1024,
            1 << 40,
            5_000_000,
            u64::MAX,
            u64::MAX - 1,
        ] {
            assert_eq!(parse_memory(&format_memory(n)), Ok(n), "{n}");
        }
    }

    #[test]
    fn cpu() {
        let cases: &[(&str, u64)] = &[
            ("500m", 500),
            ("0.5", 500),
            ("2", 2000),
            ("1.5", 1500),
            ("0", 0),
            ("0.0001", 1),
            ("1.5m", 2),
            (" 250m ", 250),
            ("18446744073709551615m", u64::MAX),
        ];
        for (s, want) in cases {
            assert_eq!(parse_cpu(s), Ok(*want), "{s}");
        }
        assert!(matches!(parse_cpu(""), Err(QuantityError::Empty { .. })));
        assert!(matches!(
            parse_cpu("-1"),
            Err(QuantityError::Negative { .. })
        ));
        assert!(matches!(
            parse_cpu("18446744073709552"),
            Err(QuantityError::Overflow { .. })
        ));
        assert!(matches!(
            parse_cpu("2 cores"),
            Err(QuantityError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_cpu("1M"),
            Err(QuantityError::UnknownUnit { .. })
        ));
        assert!(matches!(parse_cpu("m"), Err(QuantityError::Invalid { .. })));
        assert_eq!(
            parse_cpu("lots").unwrap_err().to_string(),
            "cpu \"lots\" is not valid (missing number): write cores or millicores, e.g. 2, 0.5, 500m"
        );
        assert_eq!(format_cpu(0), "0");
        assert_eq!(format_cpu(500), "500m");
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_cpu(1500), "1500m");
        for n in [0, 1, 999, 1000, u64::MAX, u64::MAX / 1000 * 1000] {
            assert_eq!(parse_cpu(&format_cpu(n)), Ok(n), "{n}");
        }
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Duration)] = &[
            ("10s", ms(10_000)),
            ("1m30s", ms(90_000)),
            ("500ms", ms(500)),
            ("2h", ms(7_200_000)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1.5s", ms(1500)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("3µs", Duration::from_micros(3)),
            ("7ns", Duration::from_nanos(7)),
            (" 5s ", ms(5000)),
            ("5d", Duration::from_secs(5 * 86_400)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s), Ok(*want), "{s}");
        }
        for bad in [
            "", "10", "1x", "s", "1m30", "1.s.", "-5s", "+5s", "1 s", "5w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_duration("-1s"),
            Err(QuantityError::Negative { .. })
        ));
        assert!(matches!(
            parse_duration("6000000h"),
            Err(QuantityError::Overflow { .. })
        ));
        assert_eq!(
            parse_duration("10").unwrap_err().to_string(),
            "duration \"10\" is not valid (a number has no unit): write numbers with units ns, us, ms, s, m, h, d, e.g. 10s, 1m30s, 1.5s, 500ms, 2h, 7d"
        );
        assert_eq!(format_duration(ms(90_000)), "1m30s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(ms(1500)), "1s500ms");
        for d in [
            Duration::new(3723, 4_005_006),
            Duration::from_nanos(u64::MAX),
            ms(1),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn long_input_is_shortened_in_messages() {
        let long = "x".repeat(10_000);
        let msg = parse_memory(&long).unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
        assert!(!msg.contains('\n'));
        assert!(!parse_cpu("1\n2").unwrap_err().to_string().contains('\n'));
    }
}
