//! Formatting numbers for messages.

/// `x` rounded to 6 significant digits (whole numbers keep all their digits),
/// without trailing zeros or an exponent: `0.00025`, `8192`, `95.5`. Policies compute in `f64`
/// from `f32` inputs, so printing every digit would show noise such as
/// `0.00024999999`.
#[must_use]
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    // Digits after the point for 6 significant digits (clamped, so the
    // float-to-integer conversion is exact).
    let magnitude = x.abs().log10().floor();
    let decimals = (5.0 - magnitude).clamp(0.0, 30.0) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::fmt_num;

    #[test]
    fn six_significant_digits_trimmed() {
        assert_eq!(fmt_num(0.000_25), "0.00025");
        assert_eq!(fmt_num(f64::from(0.9_f32) / 3600.0), "0.00025");
        assert_eq!(fmt_num(8192.0), "8192");
        assert_eq!(fmt_num(95.5), "95.5");
        assert_eq!(fmt_num(f64::from(50.1_f32)), "50.1");
        assert_eq!(fmt_num(1_234_567.0), "1234567");
        assert_eq!(fmt_num(-2.5), "-2.5");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(1e-12), "0.000000000001");
    }
}
