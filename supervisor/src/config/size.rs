//! Memory sizes in the job file: a string holding a number and a unit
//! (`"2GiB"`, `"512MiB"`, `"1.5GB"`), read with `bytesize`.

use bytesize::ByteSize;

/// The smallest `memory_limit` accepted. Anything below it cannot even map a
/// program and its libraries, so it is surely a slip of the unit.
pub(super) const MIN_MEMORY_LIMIT: u64 = 1 << 20;

const EXAMPLES: &str = "e.g. \"2GiB\", \"512MiB\" or \"1.5GB\"";

/// A `[worker] memory_limit` value in bytes, or what is wrong with it.
pub(super) fn memory_limit(value: &toml::Value) -> Result<u64, String> {
    let text = match value {
        toml::Value::String(text) => text,
        // A bare number could be bytes, KiB or MiB depending on where the
        // user last set a limit; a unit removes the guess.
        toml::Value::Integer(n) => {
            return Err(format!(
                "a bare number ({n}) is not a size: write it as a string with a unit, {EXAMPLES}"
            ));
        }
        toml::Value::Float(f) => {
            return Err(format!(
                "a bare number ({f}) is not a size: write it as a string with a unit, {EXAMPLES}"
            ));
        }
        other => {
            return Err(format!(
                "expected a size as a string with a unit, {EXAMPLES}; got {} {}",
                article(other.type_str()),
                other.type_str()
            ));
        }
    };
    let bytes = parse(text)?;
    if bytes < MIN_MEMORY_LIMIT {
        return Err(format!(
            "\"{text}\" ({bytes} bytes) is too small: a memory limit must be at least 1MiB"
        ));
    }
    Ok(bytes)
}

/// Bytes in `text`, which must end in a unit: a memory limit or a chunk size.
pub(super) fn parse(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let number_len = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_len);
    let unit = unit.trim_start();
    if number.is_empty() || number.parse::<f64>().is_err() {
        return Err(format!(
            "\"{text}\" is not a size: write a number and a unit, {EXAMPLES}"
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "\"{text}\" has no unit: write a number and a unit, {EXAMPLES}"
        ));
    }
    // bytesize reads a lone `G` as 10^9 bytes, where docker and systemd read
    // 2^30: refuse the letter rather than pick one of the two.
    if unit.len() == 1 && !unit.eq_ignore_ascii_case("b") {
        let upper = unit.to_ascii_uppercase();
        return Err(format!(
            "\"{text}\" is ambiguous: write \"{number}{upper}B\" (powers of 1000) or \"{number}{upper}iB\" (powers of 1024)"
        ));
    }
    let size: ByteSize = trimmed.parse().map_err(|_| {
        format!(
            "\"{text}\" has an unknown unit \"{unit}\": use B, KB, MB, GB, TB (powers of 1000) \
             or KiB, MiB, GiB, TiB (powers of 1024)"
        )
    })?;
    // bytesize saturates instead of failing.
    if size.as_u64() == u64::MAX {
        return Err(format!("\"{text}\" is too large"));
    }
    Ok(size.as_u64())
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str) -> Result<u64, String> {
        memory_limit(&toml::Value::String(text.to_owned()))
    }

    #[test]
    fn binary_and_decimal_units() {
        assert_eq!(limit("2GiB"), Ok(2 << 30));
        assert_eq!(limit("512MiB"), Ok(512 << 20));
        assert_eq!(limit("1.5GB"), Ok(1_500_000_000));
        assert_eq!(limit("1.5 GiB"), Ok(3 << 29));
        assert_eq!(limit(" 2gib "), Ok(2 << 30));
        assert_eq!(limit("1MiB"), Ok(MIN_MEMORY_LIMIT));
        assert_eq!(limit("1048576B"), Ok(MIN_MEMORY_LIMIT));
        assert_eq!(limit("3Gi"), Ok(3 << 30));
    }

    #[test]
    fn below_one_mebibyte_is_refused() {
        let err = limit("10KiB").unwrap_err();
        assert!(
            err.contains("10240 bytes") && err.contains("at least 1MiB"),
            "{err}"
        );
        assert!(limit("1048575B").is_err());
        assert!(limit("0GiB").is_err());
    }

    #[test]
    fn a_unit_is_required() {
        assert!(limit("1048576").unwrap_err().contains("has no unit"));
        assert!(limit("1.5").unwrap_err().contains("has no unit"));
        let err = memory_limit(&toml::Value::Integer(2 << 30)).unwrap_err();
        assert!(err.contains("string with a unit"), "{err}");
        let err = memory_limit(&toml::Value::Float(1.5)).unwrap_err();
        assert!(err.contains("string with a unit"), "{err}");
    }

    #[test]
    fn single_letter_units_are_ambiguous() {
        let err = limit("2G").unwrap_err();
        assert!(err.contains("\"2GB\"") && err.contains("\"2GiB\""), "{err}");
        assert!(limit("512m").unwrap_err().contains("\"512MiB\""));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["lots", "", "GiB", "-1GiB", "1.2.3GiB", "2 gigs", "2GiBs"] {
            assert!(limit(bad).is_err(), "{bad:?}");
        }
        assert!(
            limit("2 gigs")
                .unwrap_err()
                .contains("unknown unit \"gigs\"")
        );
        assert!(limit("100EiB").unwrap_err().contains("too large"));
        let err = memory_limit(&toml::Value::Boolean(true)).unwrap_err();
        assert!(err.ends_with("got a boolean"), "{err}");
        let err = memory_limit(&toml::Value::Array(Vec::new())).unwrap_err();
        assert!(err.ends_with("got an array"), "{err}");
    }
}
