//! A shop's past: days of trading before now, driven through the same services, outbox and
//! bus as live traffic, with the services' clock pinned to each moment.
//!
//! The volume of each day comes from `(seed, day)` alone: a trend that grows over the
//! range, a weekly rhythm (weekends busiest), a festival (the Black Friday weekend, Friday
//! to Cyber Monday, with most lines on a few hot products), and some noise.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::plan::{Stream, rng_for};
use crate::{Catalogue, FestivalConfig, Planner, ShopUrls, SimConfig, SimError, SimReport};

/// What the history needs of the services' clock (they share it, in one process): read it,
/// and move it forward to the next order's moment.
pub trait ShopClock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    fn advance_to(&self, to: DateTime<Utc>);
}

/// The system time, which nobody moves: what live traffic runs on.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl ShopClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn advance_to(&self, _: DateTime<Utc>) {}
}

/// How much past to create, and its shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Days of trading before today (0 = no history).
    pub days: u32,
    /// Orders on an average day at the start of the range.
    pub orders_per_day: f64,
    /// The end of the range has this many times the orders of its start.
    pub growth: f64,
    /// Factor on the orders of the Black Friday weekend (Friday to Monday).
    pub festival_multiplier: f64,
    /// Order lifecycles in flight at once.
    pub concurrency: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            days: 0,
            orders_per_day: 12.0,
            growth: 3.0,
            festival_multiplier: 5.0,
            concurrency: 32,
        }
    }
}

/// Weekly rhythm, Monday first: weekends sell most.
const WEEKDAY_FACTOR: [f64; 7] = [0.85, 0.9, 0.95, 1.0, 1.1, 1.3, 1.2];
/// A day's volume varies this much either way around its expectation.
const NOISE: f64 = 0.15;
/// Orders of a day start between these hours (UTC).
const OPENING_HOURS: (u32, u32) = (7, 23);

impl HistoryConfig {
    /// Rejects values that make no sense.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |reason: String| Err(SimError::InvalidConfig(reason));
        for (name, v) in [
            ("history.orders_per_day", self.orders_per_day),
            ("history.growth", self.growth),
            ("history.festival_multiplier", self.festival_multiplier),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return invalid(format!("{name} must be a finite number >= 0, not {v}"));
            }
        }
        if self.growth == 0.0 {
            return invalid("history.growth must be above 0".into());
        }
        if self.concurrency < 1 {
            return invalid("history.concurrency must be at least 1".into());
        }
        Ok(())
    }

    /// The days of history before `today`, oldest first.
    pub fn range(&self, today: NaiveDate) -> Vec<NaiveDate> {
        (1..=i64::from(self.days))
            .rev()
            .map(|back| today - Duration::days(back))
            .collect()
    }

    /// How many orders start on `day`, the `index`-th of `total` days of the range.
    pub fn orders_on(&self, seed: u64, day: NaiveDate, index: usize, total: usize) -> u64 {
        let progress = if total > 1 {
            index as f64 / (total - 1) as f64
        } else {
            1.0
        };
        let trend = self.orders_per_day * self.growth.powf(progress);
        let weekday = WEEKDAY_FACTOR[day.weekday().num_days_from_monday() as usize];
        let festival = if is_festival(day) {
            self.festival_multiplier
        } else {
            1.0
        };
        let mut rng = rng_for(seed, Stream::History, day_number(day));
        let noise = 1.0 + NOISE * (2.0 * rng.random::<f64>() - 1.0);
        let expected = trend * weekday * festival * noise;
        // Rounded at random, so a small expectation still averages out right.
        (expected.floor() + f64::from(rng.random_bool(expected.fract()))) as u64
    }
}

/// The Black Friday weekend: the day after the fourth Thursday of November, to the Monday.
pub fn is_festival(day: NaiveDate) -> bool {
    let first = NaiveDate::from_ymd_opt(day.year(), 11, 1).expect("1 November exists");
    let to_thursday =
        (7 + Weekday::Thu.num_days_from_monday() - first.weekday().num_days_from_monday()) % 7;
    let black_friday = first + Duration::days(i64::from(to_thursday) + 21 + 1);
    (black_friday..=black_friday + Duration::days(3)).contains(&day)
}

fn day_number(day: NaiveDate) -> u64 {
    day.num_days_from_ce().max(0) as u64
}

/// When the `i`-th of `n` orders of `day` starts: spread over the opening hours.
fn start_of(day: NaiveDate, i: u64, n: u64) -> DateTime<Utc> {
    let (open, close) = OPENING_HOURS;
    let span_ms = i64::from(close - open) * 3_600_000;
    let offset = span_ms * (2 * i as i64 + 1) / (2 * n.max(1) as i64);
    Utc.from_utc_datetime(&day.and_hms_opt(open, 0, 0).expect("a valid hour"))
        + Duration::milliseconds(offset)
}

/// Drives the orders of `days` (oldest first), moving `clock` to each order's start, and
/// calls `day_done` once a day's orders have all started. Returns when every started order
/// has finished or `shutdown` is cancelled. Orders take their decisions from
/// `(config.seed, first_order + k)`; a festival day's orders favour the hot products.
#[allow(clippy::too_many_arguments)]
pub async fn run_history(
    urls: &ShopUrls,
    config: &SimConfig,
    history: &HistoryConfig,
    catalogue: &Catalogue,
    clock: Arc<dyn ShopClock>,
    days: &[NaiveDate],
    shutdown: CancellationToken,
    mut day_done: impl FnMut(NaiveDate, &SimReport),
) -> Result<SimReport, SimError> {
    config.validate()?;
    history.validate()?;
    if catalogue.customers.is_empty() || catalogue.products.is_empty() {
        return Err(SimError::EmptyCatalogue);
    }
    let (customers, products) = (catalogue.customers.len(), catalogue.products.len());
    let planner_for = |festival: bool| {
        let config = SimConfig {
            festival: FestivalConfig {
                enabled: festival,
                ..config.festival.clone()
            },
            ..config.clone()
        };
        Planner::new(&config, customers, products)
    };
    let (everyday, festival) = (planner_for(false), planner_for(true));
    // The past is created as fast as the shop takes it: no pause between steps.
    let fast = SimConfig {
        step_delay_ms: 0,
        ..config.clone()
    };
    let driver = Arc::new(crate::lifecycle::Driver::new(
        urls,
        &fast,
        catalogue.clone(),
        shutdown.clone(),
        clock.clone(),
    )?);
    let semaphore = Arc::new(Semaphore::new(history.concurrency));
    let mut tasks = JoinSet::new();
    let mut report = SimReport::default();
    let mut k: u64 = 0;
    tracing::info!(
        days = days.len(),
        from = ?days.first(),
        to = ?days.last(),
        run = %driver.run_id(),
        "creating the shop's history"
    );
    'days: for (index, &day) in days.iter().enumerate() {
        let n = history.orders_on(config.seed, day, index, days.len());
        let planner = if is_festival(day) {
            &festival
        } else {
            &everyday
        };
        for i in 0..n {
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'days,
                permit = semaphore.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break 'days,
                },
            };
            clock.advance_to(start_of(day, i, n));
            while let Some(done) = tasks.try_join_next() {
                crate::collect(done, false, &mut Vec::new(), &mut report);
            }
            let mut plan = planner.plan(k);
            // An old order's route matters less than a live one's: one stop on the way.
            plan.route.truncate(1);
            let driver = driver.clone();
            let (placed, on_placed) = oneshot::channel();
            tasks.spawn(async move {
                let outcome = driver.drive(plan, Some(placed)).await;
                drop(permit);
                (0, outcome)
            });
            // The order is created at its moment before the clock moves on; its later
            // steps (payment, shipping) happen while the next orders are placed.
            let _ = on_placed.await;
            k += 1;
        }
        day_done(day, &report);
    }
    while let Some(done) = tasks.join_next().await {
        crate::collect(done, false, &mut Vec::new(), &mut report);
    }
    tracing::info!(
        orders = k,
        placed = report.orders_placed,
        errors = report.errors,
        "the shop's history is created"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn black_friday_weekend_is_the_festival() {
        // 2026: Thanksgiving on 26 November; 2025: on 27 November; 2024: on 28 November.
        for (friday, year) in [
            ("2026-11-27", 2026),
            ("2025-11-28", 2025),
            ("2024-11-29", 2024),
        ] {
            let friday = date(friday);
            assert!(is_festival(friday), "{year}");
            assert!(
                is_festival(friday + Duration::days(3)),
                "{year}: Cyber Monday"
            );
            assert!(
                !is_festival(friday - Duration::days(1)),
                "{year}: Thanksgiving"
            );
            assert!(!is_festival(friday + Duration::days(4)), "{year}");
        }
        assert!(!is_festival(date("2026-07-03")));
    }

    #[test]
    fn the_range_ends_yesterday_oldest_first() {
        let history = HistoryConfig {
            days: 3,
            ..HistoryConfig::default()
        };
        assert_eq!(
            history.range(date("2026-03-01")),
            [date("2026-02-26"), date("2026-02-27"), date("2026-02-28")]
        );
        assert!(
            HistoryConfig::default()
                .range(date("2026-03-01"))
                .is_empty()
        );
    }

    /// The shape a business user recognises: growth, weekends, the festival.
    #[test]
    fn volumes_grow_peak_at_weekends_and_spike_at_the_festival() {
        let history = HistoryConfig {
            days: 364,
            orders_per_day: 40.0,
            ..HistoryConfig::default()
        };
        let days = history.range(date("2026-12-06"));
        let volumes: Vec<u64> = (0..days.len())
            .map(|i| history.orders_on(7, days[i], i, days.len()))
            .collect();
        let sum = |pick: &dyn Fn(usize) -> bool| -> (u64, u64) {
            let picked: Vec<u64> = (0..days.len())
                .filter(|&i| pick(i))
                .map(|i| volumes[i])
                .collect();
            (picked.iter().sum(), picked.len() as u64)
        };
        let mean = |(sum, n): (u64, u64)| sum as f64 / n as f64;
        let first_quarter = mean(sum(&|i| i < 91));
        let last_quarter = mean(sum(&|i| i >= 273 && !is_festival(days[i])));
        assert!(
            last_quarter > 2.0 * first_quarter,
            "{first_quarter} -> {last_quarter}"
        );
        let weekend = mean(sum(&|i| days[i].weekday().num_days_from_monday() >= 5));
        let monday = mean(sum(&|i| days[i].weekday() == Weekday::Mon));
        assert!(weekend > 1.3 * monday, "{monday} vs {weekend}");
        let festival = mean(sum(&|i| is_festival(days[i])));
        let november = mean(sum(&|i| {
            days[i].month() == 11 && !is_festival(days[i]) && days[i].day() < 27
        }));
        assert!(festival > 3.0 * november, "{november} vs {festival}");
        // Same seed, same volumes; another seed, other noise.
        let again: Vec<u64> = (0..days.len())
            .map(|i| history.orders_on(7, days[i], i, days.len()))
            .collect();
        assert_eq!(volumes, again);
        let other: Vec<u64> = (0..days.len())
            .map(|i| history.orders_on(8, days[i], i, days.len()))
            .collect();
        assert_ne!(volumes, other);
    }

    #[test]
    fn orders_of_a_day_start_in_opening_hours_in_order() {
        let day = date("2026-05-05");
        let starts: Vec<_> = (0..10).map(|i| start_of(day, i, 10)).collect();
        assert!(starts.windows(2).all(|w| w[0] < w[1]));
        assert!(starts[0] > Utc.from_utc_datetime(&day.and_hms_opt(7, 0, 0).unwrap()));
        assert!(starts[9] < Utc.from_utc_datetime(&day.and_hms_opt(23, 0, 0).unwrap()));
    }

    #[test]
    fn nonsense_histories_are_rejected() {
        assert!(HistoryConfig::default().validate().is_ok());
        for bad in [
            HistoryConfig {
                growth: 0.0,
                ..HistoryConfig::default()
            },
            HistoryConfig {
                orders_per_day: f64::NAN,
                ..HistoryConfig::default()
            },
            HistoryConfig {
                concurrency: 0,
                ..HistoryConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
