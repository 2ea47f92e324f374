//! [`Scenario::validate`]: the ranges and names a scenario must respect,
//! checked once after it is read.

use super::{Dist, Process, Scenario, ScenarioError};

impl Scenario {
    /// Checks ranges and names.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !positive(self.duration_s) {
            return Err(self.invalid("duration_s must be > 0".into()));
        }
        if !non_negative(self.warmup_s) || self.warmup_s >= self.duration_s {
            return Err(self.invalid("warmup_s must be in [0, duration_s)".into()));
        }
        if !non_negative(self.drain_s) {
            return Err(self.invalid("drain_s must be >= 0".into()));
        }
        if self.policies.is_empty() {
            return Err(self.invalid("policies is empty".into()));
        }
        let mut names: Vec<&str> = Vec::new();
        for s in &self.services {
            if names.contains(&s.name.as_str()) {
                return Err(self.invalid(format!("service {:?} is defined twice", s.name)));
            }
            names.push(&s.name);
            self.check_dist(&s.service_time, &s.name)?;
        }
        let mut ids: Vec<String> = Vec::new();
        for g in &self.nodes {
            if g.count == 0 || g.max_concurrent == 0 || g.workers == Some(0) {
                return Err(self.invalid(format!(
                    "nodes {:?}: count, max_concurrent and workers must be >= 1",
                    g.id
                )));
            }
            if !positive(g.speed) || !non_negative(g.cost_per_hour) {
                return Err(self.invalid(format!(
                    "nodes {:?}: speed must be > 0 and cost_per_hour >= 0",
                    g.id
                )));
            }
            let hosted = g.hosted();
            if hosted.is_empty() {
                return Err(self.invalid(format!("nodes {:?} host no service", g.id)));
            }
            for name in &hosted {
                if !names.contains(&name.as_str()) {
                    return Err(
                        self.invalid(format!("nodes {:?} host unknown service {name:?}", g.id))
                    );
                }
            }
            for slot in &g.slots {
                if let Some(loaded) = &slot.loaded
                    && !slot.can_host.contains(loaded)
                {
                    return Err(self.invalid(format!(
                        "nodes {:?} slot {:?}: loaded {loaded:?} is not in can_host",
                        g.id, slot.name
                    )));
                }
                if g.services.iter().any(|s| slot.can_host.contains(s)) {
                    return Err(self.invalid(format!(
                        "nodes {:?}: a service is both always loaded and in slot {:?}",
                        g.id, slot.name
                    )));
                }
            }
            if g.model.is_some_and(|m| !m.valid()) {
                return Err(self.invalid(format!(
                    "nodes {:?}: model needs prefill_us_per_token >= 0 and tokens_per_s > 0",
                    g.id
                )));
            }
            for w in &g.windows {
                let factor_ok = w.factor.is_none_or(positive);
                let fixed_ok = w.fixed_ms.is_none_or(non_negative);
                if !non_negative(w.from_s)
                    || w.until_s.is_nan()
                    || w.until_s <= w.from_s
                    || !factor_ok
                    || !fixed_ok
                    || !(0.0..=1.0).contains(&w.fail)
                    || !non_negative(w.fail_after_ms)
                {
                    return Err(self.invalid(format!(
                        "nodes {:?}: window {}..{} s is out of range",
                        g.id, w.from_s, w.until_s
                    )));
                }
            }
            for id in g.ids() {
                if ids.contains(&id) {
                    return Err(self.invalid(format!("node id {id:?} is used twice")));
                }
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err(self.invalid("no nodes".into()));
        }
        if self.arrivals.is_empty() {
            return Err(self.invalid("no arrivals".into()));
        }
        for a in &self.arrivals {
            if !names.contains(&a.service.as_str()) {
                return Err(self.invalid(format!("arrivals call unknown service {:?}", a.service)));
            }
            let ok = match &a.process {
                Process::Poisson { rate_per_s } => positive(*rate_per_s),
                Process::OnOff {
                    rate_per_s,
                    off_rate_per_s,
                    on_s,
                    off_s,
                    offset_s,
                } => {
                    non_negative(*rate_per_s)
                        && non_negative(*off_rate_per_s)
                        && positive(*on_s)
                        && non_negative(*off_s)
                        && non_negative(*offset_s)
                }
                Process::Burst { at_s, every_s, .. } => {
                    non_negative(*at_s) && every_s.is_none_or(positive)
                }
                Process::Trace { .. } => true,
                Process::Chat(chat) => chat.valid(),
            };
            if !ok {
                return Err(self.invalid(format!(
                    "arrivals of {:?}: rates and periods out of range",
                    a.service
                )));
            }
        }
        for p in &self.preloads {
            let group = self.nodes.iter().find(|g| g.ids().contains(&p.node));
            let slot = group.and_then(|g| g.slots.iter().find(|s| s.name == p.slot));
            if slot.is_none_or(|s| !s.can_host.contains(&p.service)) {
                return Err(self.invalid(format!(
                    "preload of {:?} into {}/{}: no such node, slot, or the slot cannot host it",
                    p.service, p.node, p.slot
                )));
            }
            if !non_negative(p.at_s) || p.every_s.is_some_and(|e| !positive(e)) {
                return Err(self.invalid("preload times out of range".into()));
            }
        }
        Ok(())
    }

    fn check_dist(&self, dist: &Dist, service: &str) -> Result<(), ScenarioError> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let ok = match dist {
            Dist::Exponential { mean_ms } => positive(*mean_ms),
            Dist::LogNormal {
                median_ms,
                sigma,
                p99_ms,
            } => {
                positive(*median_ms)
                    && match (sigma, p99_ms) {
                        (Some(s), None) => s.is_finite() && *s >= 0.0,
                        (None, Some(p)) => p.is_finite() && *p >= *median_ms,
                        _ => false,
                    }
            }
            Dist::Fixed { ms } => ms.is_finite() && *ms >= 0.0,
            Dist::Trace { .. } => true,
        };
        if ok {
            Ok(())
        } else {
            Err(self.invalid(format!(
                "service {service:?}: service_time out of range (log_normal needs sigma or p99_ms >= median_ms, not both)"
            )))
        }
    }
}
