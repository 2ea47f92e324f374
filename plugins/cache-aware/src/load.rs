//! The candidates' loads, from the model servers or the gateway.

use policy_sdk::Candidate;

/// The load of each candidate in one unit: the model servers' requests
/// `waiting + running` when every candidate's node reports them (mixing
/// them with the gateway's own counts would compare two different things),
/// else the gateway's calls of the service in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loads {
    /// Candidate i's load, requests.
    pub values: Vec<u64>,
    /// Whether the values come from the model servers.
    pub from_model_servers: bool,
}

impl Loads {
    /// The loads of `candidates`, from their `model_load` when every one
    /// has it.
    #[must_use]
    pub fn new(candidates: &[Candidate]) -> Self {
        let known: Option<Vec<u64>> = candidates
            .iter()
            .map(|c| {
                c.model_load
                    .map(|l| u64::from(l.waiting) + u64::from(l.running))
            })
            .collect();
        match known {
            Some(values) if !values.is_empty() => Self {
                values,
                from_model_servers: true,
            },
            _ => Self {
                values: candidates.iter().map(|c| u64::from(c.in_flight)).collect(),
                from_model_servers: false,
            },
        }
    }

    /// What the values count, for reasons: `waiting+running` or `in flight`.
    #[must_use]
    pub fn unit(&self) -> &'static str {
        if self.from_model_servers {
            "waiting+running"
        } else {
            "in flight"
        }
    }

    /// The largest and smallest load, `(0, 0)` with no candidate.
    #[must_use]
    pub fn max_min(&self) -> (u64, u64) {
        let max = self.values.iter().copied().max().unwrap_or(0);
        let min = self.values.iter().copied().min().unwrap_or(0);
        (max, min)
    }
}
