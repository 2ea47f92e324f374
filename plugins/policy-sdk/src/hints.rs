//! Typed access to a request's key/value hints.
//!
//! A hint given twice counts once: the first occurrence wins, as in the
//! gateway's own `CallHead::hint`. Values are trimmed. Unknown hints are
//! ignored (the WIT contract), but a known hint with a malformed value is an
//! error whose message the policy returns as its reject reason.

/// A request's hints, with typed getters.
#[derive(Debug, Clone, Copy)]
pub struct Hints<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Hints<'a> {
    /// Wraps the request's `(key, value)` pairs.
    #[must_use]
    pub fn new(pairs: &'a [(String, String)]) -> Self {
        Self { pairs }
    }

    /// Every `(key, value)` pair, in request order, untrimmed.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The trimmed value of hint `key`, if present.
    #[must_use]
    pub fn get_str(&self, key: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
    }

    /// Hint `key` as a finite number, if present.
    ///
    /// # Errors
    /// `bad hint KEY="VALUE": expected a number` when the value does not parse
    /// as a finite `f64`.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, String> {
        let Some(text) = self.get_str(key) else {
            return Ok(None);
        };
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(format!("bad hint {key}={text:?}: expected a number")),
        }
    }

    /// Hint `key` as a finite number `>= 0`, if present: for limits and
    /// weights.
    ///
    /// # Errors
    /// `bad hint KEY="VALUE": expected a number >= 0` when the value is not a
    /// finite number or is negative.
    pub fn get_non_negative(&self, key: &str) -> Result<Option<f64>, String> {
        match self.get_f64(key) {
            Ok(Some(x)) if x >= 0.0 => Ok(Some(x)),
            Ok(None) => Ok(None),
            _ => Err(format!(
                "bad hint {key}={:?}: expected a number >= 0",
                self.get_str(key).unwrap_or_default()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Hints;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn typed_getters() {
        let p = pairs(&[
            ("max_cost", " 0.5 "),
            ("optimize", "latency"),
            ("max_cost", "9"),
            ("bad", "x1"),
            ("neg", "-2"),
            ("inf", "inf"),
        ]);
        let h = Hints::new(&p);
        assert_eq!(h.get_f64("max_cost"), Ok(Some(0.5)));
        assert_eq!(h.get_str("optimize"), Some("latency"));
        assert_eq!(h.get_str("absent"), None);
        assert_eq!(h.get_f64("absent"), Ok(None));
        assert_eq!(
            h.get_f64("bad"),
            Err("bad hint bad=\"x1\": expected a number".to_owned())
        );
        assert_eq!(
            h.get_f64("inf"),
            Err("bad hint inf=\"inf\": expected a number".to_owned())
        );
        assert_eq!(h.get_f64("neg"), Ok(Some(-2.0)));
        assert_eq!(
            h.get_non_negative("neg"),
            Err("bad hint neg=\"-2\": expected a number >= 0".to_owned())
        );
        assert_eq!(h.get_non_negative("max_cost"), Ok(Some(0.5)));
        assert_eq!(h.iter().count(), 6);
    }
}
