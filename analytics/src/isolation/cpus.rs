//! Which CPUs the query workers run on, and keeping this process off them.
//!
//! The scheduling class alone does not keep a query from slowing the shop: a thread of the
//! shop woken on a CPU a worker is using waits now and then (measured: order creation's
//! p99 3x its idle value under four hostile queries, 2.65x with the workers confined to one
//! CPU, and unchanged from idle once the shop never shares a CPU with them; switching the
//! process's CPUs on and off as queries start and end was worse than either). So the
//! workers get CPUs of their own (by default, on four CPUs or more, the last quarter of this
//! process's CPUs), and every thread of this process, the shop's too in the all-in-one
//! process, keeps off them from the start (threads started later inherit it). On fewer
//! CPUs the default sets none apart: with one of two CPUs taken from it, the shop's own
//! idle p99 doubled (5.7 to 14.7 ms), worse than what hostile queries do to it in
//! `SCHED_IDLE` on both (3x at p99); `workers.cpus` sets a partition there too.

use super::os;
use crate::engine::WorkersConfig;

/// The CPU plan of one pool.
#[derive(Debug)]
pub struct CpuPlan {
    /// The workers' CPUs; empty: any.
    workers: Vec<usize>,
    /// This process's CPUs but the workers'.
    rest: Vec<usize>,
    yield_cpus: bool,
}

impl CpuPlan {
    /// The plan `config` asks for, on the CPUs this process may use.
    pub fn new(config: &WorkersConfig) -> CpuPlan {
        let all = os::allowed_cpus(std::process::id()).unwrap_or_default();
        plan(&all, config)
    }

    /// The CPUs the workers are to keep to; empty: any.
    pub fn worker_cpus(&self) -> &[usize] {
        &self.workers
    }

    /// Keeps every thread of this process off the workers' CPUs, when the plan says so.
    pub fn apply(&self) {
        if self.yield_cpus && !self.workers.is_empty() && !self.rest.is_empty() {
            os::set_process_affinity(&self.rest);
        }
    }
}

/// The plan for a process allowed on `all`.
fn plan(all: &[usize], config: &WorkersConfig) -> CpuPlan {
    let workers: Vec<usize> = if config.share_cpus {
        Vec::new()
    } else if !config.cpus.is_empty() {
        config.cpus.clone()
    } else if all.len() >= 4 {
        all[all.len() - all.len() / 4..].to_vec()
    } else {
        Vec::new()
    };
    let rest = all
        .iter()
        .copied()
        .filter(|c| !workers.contains(c))
        .collect();
    CpuPlan {
        workers,
        rest,
        yield_cpus: config.yield_cpus,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(all: &[usize], config: &WorkersConfig) -> (Vec<usize>, Vec<usize>) {
        let p = plan(all, config);
        (p.workers, p.rest)
    }

    #[test]
    fn the_workers_get_the_last_quarter_of_the_cpus_and_the_process_the_rest() {
        let auto = WorkersConfig::default();
        // Two CPUs: none set apart by default (see the module docs).
        assert_eq!(workers(&[0, 1], &auto), (vec![], vec![0, 1]));
        assert_eq!(workers(&[0, 1, 2, 3], &auto), (vec![3], vec![0, 1, 2]));
        assert_eq!(
            workers(&(0..8).collect::<Vec<_>>(), &auto),
            (vec![6, 7], (0..6).collect())
        );
        // One CPU: nothing to set apart.
        assert_eq!(workers(&[0], &auto), (vec![], vec![0]));
        let shared = WorkersConfig {
            share_cpus: true,
            ..WorkersConfig::default()
        };
        assert_eq!(workers(&[0, 1], &shared), (vec![], vec![0, 1]));
        let given = WorkersConfig {
            cpus: vec![0],
            ..WorkersConfig::default()
        };
        assert_eq!(workers(&[0, 1, 2], &given), (vec![0], vec![1, 2]));
    }
}
