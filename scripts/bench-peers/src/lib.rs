//! The squares kernel and argument parsing shared by the peer binaries.

/// The modulus of the seed job; a constant, as in the reference worker, so the
/// compiler turns the division into a multiplication in both.
pub const MODULUS: u64 = 10_007;

/// The sum over `[start, end)` of `(i * i) % MODULUS`: the reference worker's
/// inner loop for ranges below 2^32, so the peers and the workers run the same code.
#[inline(never)]
pub fn squares(start: u64, end: u64) -> u64 {
    assert!(end <= 1 << 32, "i * i must fit in u64");
    (start..end).map(|i| i * i % MODULUS).sum()
}

/// Part `k` of `parts` over `[0, n)`, cut as the supervisor cuts chunks:
/// `chunk = ceil(n / parts)`, part k is `[k * chunk, min((k + 1) * chunk, n))`.
pub fn part(n: u64, parts: u64, k: u64) -> (u64, u64) {
    let chunk = n.div_ceil(parts);
    let start = (k * chunk).min(n);
    (start, (start + chunk).min(n))
}

/// The positional argument `i` as an integer; accepts `2e9` and `2_000_000`.
pub fn arg(args: &[String], i: usize, usage: &str) -> u64 {
    let Some(text) = args.get(i) else {
        eprintln!("usage: {usage}");
        std::process::exit(2);
    };
    parse(text).unwrap_or_else(|| {
        eprintln!("not a non-negative integer: {text}\nusage: {usage}");
        std::process::exit(2);
    })
}

fn parse(text: &str) -> Option<u64> {
    let text = text.replace('_', "");
    if let Some((mantissa, exponent)) = text.split_once(['e', 'E']) {
        let m: u64 = mantissa.parse().ok()?;
        let e: u32 = exponent.parse().ok()?;
        return m.checked_mul(10u64.checked_pow(e)?);
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_total() {
        assert_eq!(squares(0, 10_000_000), 49_259_937_824);
    }

    #[test]
    fn parts_cover_the_range() {
        for (n, parts) in [(10, 3), (2_000_000_000, 64), (5, 8)] {
            let total: u64 = (0..parts)
                .map(|k| part(n, parts, k))
                .map(|(s, e)| e - s)
                .sum();
            assert_eq!(total, n);
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse("2e9"), Some(2_000_000_000));
        assert_eq!(parse("1_000"), Some(1000));
        assert_eq!(parse("x"), None);
    }
}
