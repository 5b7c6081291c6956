//! Money is an integer amount of minor units plus its currency; this module
//! only formats it for people. No floating point anywhere.

/// Number of decimal places Stripe uses for a currency's minor unit.
pub fn exponent(currency: &str) -> u32 {
    match currency.to_ascii_lowercase().as_str() {
        // Stripe's zero-decimal currencies.
        "bif" | "clp" | "djf" | "gnf" | "jpy" | "kmf" | "krw" | "mga" | "pyg" | "rwf" | "ugx"
        | "vnd" | "vuv" | "xaf" | "xof" | "xpf" => 0,
        // Stripe's three-decimal currencies.
        "bhd" | "jod" | "kwd" | "omr" | "tnd" => 3,
        _ => 2,
    }
}

/// Formats `amount` minor units of `currency`, e.g. `(123456, "usd")` → `$1,234.56`,
/// `(1500, "jpy")` → `¥1,500`, `(995, "chf")` → `9.95 CHF`.
pub fn format(amount: i64, currency: &str) -> String {
    let exp = exponent(currency);
    let negative = amount < 0;
    let abs = amount.unsigned_abs();
    let scale = 10u64.pow(exp);
    let whole = group_thousands(abs / scale);
    let number = if exp == 0 {
        whole
    } else {
        format!("{whole}.{:0width$}", abs % scale, width = exp as usize)
    };
    let sign = if negative { "-" } else { "" };
    let upper = currency.to_ascii_uppercase();
    match upper.as_str() {
        "USD" => format!("{sign}${number}"),
        "EUR" => format!("{sign}€{number}"),
        "GBP" => format!("{sign}£{number}"),
        "JPY" => format!("{sign}¥{number}"),
        _ => format!("{sign}{number} {upper}"),
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_currency_exponent() {
        assert_eq!(format(3000, "usd"), "$30.00");
        assert_eq!(format(123_456, "usd"), "$1,234.56");
        assert_eq!(format(5, "eur"), "€0.05");
        assert_eq!(format(1500, "jpy"), "¥1,500");
        assert_eq!(format(1234, "kwd"), "1.234 KWD");
        assert_eq!(format(995, "chf"), "9.95 CHF");
        assert_eq!(format(-250, "gbp"), "-£2.50");
        assert_eq!(format(0, "usd"), "$0.00");
        assert_eq!(format(100_000_000, "krw"), "100,000,000 KRW");
    }
}
