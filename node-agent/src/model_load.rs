//! Model-server load: one task per service with a `metrics_url` scrapes the
//! server's Prometheus endpoint every stats interval and keeps the latest
//! good sample, which each stats report carries
//! ([`protocol::NodeStats::model_load`]); the gateway hands it to the
//! policies as each candidate's waiting and running requests and KV-cache
//! use.
//!
//! Waiting and running requests are summed over the gauges' label sets (a
//! server may label by model, or by engine); KV-cache use is the largest
//! of its label sets (a sum of fractions is no fraction), read as 0..=1 and
//! reported ×100 as 0..=100 %. A page where none of the three gauges
//! appears is a failed scrape (a wrong `metrics` or name); one where some
//! are missing reports them as 0 and warns once.

mod prom;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::ServiceLoad;
use reqwest::Client;
use tokio::task::JoinSet;

use crate::config::{MetricsScrape, ServiceConfig, VLLM_KV_CACHE, VLLM_KV_CACHE_NEW};

/// Largest metrics page read, bytes (8 MiB): past it the scrape fails. A
/// vLLM page with its histograms is some 100 KiB.
pub const MAX_METRICS_BYTES: usize = 8 * 1024 * 1024;

/// Stats intervals a good sample stays reported after it was taken.
pub const FRESH_INTERVALS: u32 = 3;

/// The latest model-server load of every scraped service, cheap to clone.
#[derive(Debug, Clone)]
pub struct ModelLoads {
    scraped: Arc<Vec<Scraped>>,
    /// The stats interval: scrape period, and (×[`FRESH_INTERVALS`]) how
    /// long a sample is reported.
    interval: Duration,
}

#[derive(Debug)]
struct Scraped {
    service: String,
    scrape: MetricsScrape,
    /// The latest good sample and when it was taken; `None` when the latest
    /// scrape failed or none finished yet.
    latest: Mutex<Option<(Instant, ServiceLoad)>>,
}

impl ModelLoads {
    /// The scrapes of every service of `services` with a `metrics_url`,
    /// every `interval` (the agent's stats interval).
    pub fn new(services: &[ServiceConfig], interval: Duration) -> Self {
        let scraped = services
            .iter()
            .filter_map(|s| {
                s.metrics.as_ref().map(|scrape| Scraped {
                    service: s.name.clone(),
                    scrape: scrape.clone(),
                    latest: Mutex::new(None),
                })
            })
            .collect();
        Self {
            scraped: Arc::new(scraped),
            interval: interval.max(Duration::from_millis(1)),
        }
    }

    /// The load of every service whose latest scrape at `now` is good and
    /// at most [`FRESH_INTERVALS`] intervals old, in configuration order.
    pub fn current(&self, now: Instant) -> Vec<ServiceLoad> {
        let fresh = self.interval * FRESH_INTERVALS;
        self.scraped
            .iter()
            .filter_map(|s| {
                let latest = s.latest.lock().unwrap_or_else(PoisonError::into_inner);
                latest
                    .as_ref()
                    .filter(|(at, _)| now.saturating_duration_since(*at) <= fresh)
                    .map(|(_, load)| load.clone())
            })
            .collect()
    }

    /// Scrape timeout: three quarters of the interval, at most 5 s, so a
    /// scrape ends before the next one is due.
    pub fn timeout(&self) -> Duration {
        (self.interval * 3 / 4)
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(1))
    }

    /// Starts one scraping task per scraped service on `client`; they run
    /// until the returned set is dropped.
    pub fn spawn(&self, client: &Client) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        for index in 0..self.scraped.len() {
            let loads = self.clone();
            let client = client.clone();
            tasks.spawn(async move { loads.scrape_forever(index, &client).await });
        }
        tasks
    }

    async fn scrape_forever(&self, index: usize, client: &Client) {
        let Some(scraped) = self.scraped.get(index) else {
            return;
        };
        let timeout = self.timeout();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether the previous scrape was good, and the missing gauges
        // already warned about: log changes only.
        let mut was_ok = None;
        let mut warned_missing = false;
        loop {
            ticks.tick().await;
            let outcome = fetch(client, &scraped.scrape.url, timeout)
                .await
                .and_then(|page| read_load(&scraped.service, &scraped.scrape, &page));
            let ok = outcome.is_ok();
            let sample = match outcome {
                Ok((load, missing)) => {
                    if !missing.is_empty() && !warned_missing {
                        warned_missing = true;
                        tracing::warn!(service = %scraped.service, url = %scraped.scrape.url, "model-server metrics lack {}; reporting 0 for them", missing.join(", "));
                    }
                    if was_ok != Some(true) {
                        tracing::info!(service = %scraped.service, "model-server metrics scraped: {} waiting, {} running, KV cache {:.1} %", load.waiting, load.running, load.kv_cache_pct);
                    }
                    Some((Instant::now(), load))
                }
                Err(why) => {
                    if was_ok != Some(false) {
                        tracing::warn!(service = %scraped.service, url = %scraped.scrape.url, "model-server metrics scrape failed: {why}; no load reported until one passes");
                    }
                    None
                }
            };
            was_ok = Some(ok);
            *scraped
                .latest
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = sample;
        }
    }
}

/// `GET url` within `timeout`: the body as text, at most
/// [`MAX_METRICS_BYTES`], on a 2xx status.
async fn fetch(client: &Client, url: &str, timeout: Duration) -> Result<String, String> {
    let read = async {
        let mut response = client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?
        {
            if body.len() + chunk.len() > MAX_METRICS_BYTES {
                return Err(format!("page over {MAX_METRICS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| "page is not UTF-8".to_string())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

/// Reads `service`'s load from a metrics page: the load and the names of
/// the gauges it lacks.
///
/// # Errors
/// When the page has none of the three gauges.
pub(crate) fn read_load(
    service: &str,
    scrape: &MetricsScrape,
    page: &str,
) -> Result<(ServiceLoad, Vec<String>), String> {
    let [waiting, running, mut kv, kv_new] = prom::gauges(
        page,
        [
            scrape.waiting.as_str(),
            scrape.running.as_str(),
            scrape.kv_cache.as_str(),
            VLLM_KV_CACHE_NEW,
        ],
    );
    if kv.samples == 0 && scrape.kv_cache == VLLM_KV_CACHE {
        kv = kv_new;
    }
    let found = [
        (&scrape.waiting, waiting.samples),
        (&scrape.running, running.samples),
        (&scrape.kv_cache, kv.samples),
    ];
    let missing: Vec<String> = found
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(name, _)| (*name).clone())
        .collect();
    if missing.len() == found.len() {
        return Err(format!(
            "none of {}, {}, {} on the page",
            scrape.waiting, scrape.running, scrape.kv_cache
        ));
    }
    let load = ServiceLoad {
        service: service.to_string(),
        waiting: count(waiting.sum),
        running: count(running.sum),
        kv_cache_pct: kv_pct(kv.max),
    };
    Ok((load, missing))
}

/// A request count from a gauge's value: rounded, 0 for negatives,
/// saturating at `u32::MAX`.
fn count(value: f64) -> u32 {
    // `as` saturates and maps NaN to 0.
    value.round().max(0.0) as u32
}

/// A 0..=1 fraction as 0..=100 %, clamped.
fn kv_pct(fraction: f64) -> f32 {
    ((fraction * 100.0).clamp(0.0, 100.0)) as f32
}

#[cfg(test)]
mod tests;
