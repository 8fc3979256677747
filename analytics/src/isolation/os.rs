//! The operating system's limits on a query worker, set by the worker on itself (it runs
//! our own code; what it must be protected from is the SQL it runs): an address-space cap,
//! a CPU-time cap per query, no core dumps, a file-size cap for spill files, a lower
//! scheduling priority, and death with its parent.
//!
//! Linux only, like the rest of the isolation: `/proc` is read for the address space and CPU
//! time used so far.

use std::io;
use std::time::Duration;

use rustix::process::{Resource, Rlimit, Signal};

/// Asks the kernel to kill this process when the thread that started it exits, and watches
/// for the parent's death as well (a process reparented to init is orphaned): a worker never
/// outlives the server that started it.
pub fn die_with_parent() {
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        eprintln!("query worker: cannot set the parent-death signal: {e}");
    }
    let parent = rustix::process::getppid();
    std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                if rustix::process::getppid() != parent {
                    std::process::exit(3);
                }
            }
        })
        .ok();
}

/// Puts the calling thread, and the threads it starts later, in the idle scheduling class
/// (`SCHED_IDLE`): it runs only when a CPU would otherwise be idle, and any ordinary thread
/// that wakes up preempts it. Lowering one's own class needs no privilege. Call it before
/// [`lower_priority`] (setting the class resets the nice value to 0).
pub fn idle_class() -> io::Result<()> {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
    .map_err(|e| io::Error::other(format!("cannot enter SCHED_IDLE: {e:?}")))
}

/// Lets the calling thread, and the threads it starts later, run only on `cpus` (ids past
/// the kernel's set size are ignored).
pub fn pin_to(cpus: &[usize]) -> io::Result<()> {
    rustix::thread::sched_setaffinity(None, &cpu_set(cpus)).map_err(io::Error::from)
}

/// Lets every thread of this process run only on `cpus` (threads that end meanwhile are
/// skipped; threads started later inherit their creator's CPUs).
pub fn set_process_affinity(cpus: &[usize]) {
    let set = cpu_set(cpus);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let tid = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok());
        if let Some(pid) = tid.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::thread::sched_setaffinity(Some(pid), &set);
        }
    }
}

/// `cpus` as the kernel's CPU set (ids past its size are left out).
fn cpu_set(cpus: &[usize]) -> rustix::thread::CpuSet {
    use rustix::thread::CpuSet;
    let mut set = CpuSet::new();
    for &cpu in cpus.iter().filter(|&&c| c < CpuSet::MAX_CPU) {
        set.set(cpu);
    }
    set
}

/// The CPUs process `pid` may run on.
pub fn allowed_cpus(pid: u32) -> Option<Vec<usize>> {
    use rustix::thread::CpuSet;
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    let set = rustix::thread::sched_getaffinity(Some(pid)).ok()?;
    Some((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
}

/// The scheduling policy of process `pid`'s main thread (`/proc/<pid>/stat`, field 41):
/// 0 ordinary, 3 batch, 5 idle.
pub fn scheduling_policy(pid: u32) -> Option<u32> {
    policy_in(&format!("/proc/{pid}/stat"))
}

fn policy_in(stat_file: &str) -> Option<u32> {
    stat_fields(stat_file, &[41])?[0].parse().ok()
}

/// Fields `numbers` (1-based, as `proc(5)` numbers them) of a `/proc/.../stat` file.
fn stat_fields(stat_file: &str, numbers: &[usize]) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(stat_file).ok()?;
    // After the command name (in parentheses, and it may hold spaces) comes field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    numbers
        .iter()
        .map(|n| fields.get(n.checked_sub(3)?).map(|f| (*f).to_owned()))
        .collect()
}

/// Lowers the calling thread's priority to `nice` (never raises it). On Linux the nice value
/// is per thread and inherited by threads started later, so call this before starting any.
pub fn lower_priority(nice: i32) {
    let current = rustix::process::getpriority_process(None).unwrap_or(0);
    if nice > current {
        let _ = rustix::process::setpriority_process(None, nice.min(19));
    }
}

/// Caps the address space at `bytes` and spill files at `file_bytes` each, and turns core
/// dumps off (a worker killed for its CPU time or memory must not write gigabytes).
pub fn cap_memory_and_files(bytes: u64, file_bytes: u64) -> io::Result<()> {
    set(Resource::Core, 0)?;
    set(Resource::As, bytes)?;
    set(Resource::Fsize, file_bytes)?;
    Ok(())
}

fn set(resource: Resource, value: u64) -> io::Result<()> {
    rustix::process::setrlimit(
        resource,
        Rlimit {
            current: Some(value),
            maximum: Some(value),
        },
    )
    .map_err(io::Error::from)
}

/// Lets the process use `seconds` more CPU time from now (the kernel sends `SIGXCPU`, which
/// ends it, past that). Only the soft limit moves, so the next query can get its own budget.
pub fn allow_cpu_seconds(seconds: u64) -> io::Result<()> {
    let used = cpu_seconds_used().unwrap_or(0);
    let hard = rustix::process::getrlimit(Resource::Cpu).maximum;
    let soft = used.saturating_add(seconds.max(1));
    let soft = hard.map_or(soft, |h| soft.min(h));
    rustix::process::setrlimit(
        Resource::Cpu,
        Rlimit {
            current: Some(soft),
            maximum: hard,
        },
    )
    .map_err(io::Error::from)
}

/// CPU seconds (user and system) this process has used, rounded up.
pub fn cpu_seconds_used() -> Option<u64> {
    // utime is field 14, stime 15.
    let fields = stat_fields("/proc/self/stat", &[14, 15])?;
    let utime: u64 = fields[0].parse().ok()?;
    let stime: u64 = fields[1].parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    Some((utime + stime).div_ceil(ticks))
}

/// The address space this process maps now (`VmSize`), in bytes.
pub fn address_space_bytes() -> Option<u64> {
    status_kib("VmSize:").map(|k| k * 1024)
}

/// A `/proc/self/status` line's value in KiB.
fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reports_its_address_space_and_cpu_time() {
        assert!(address_space_bytes().unwrap() > 1024 * 1024);
        assert!(cpu_seconds_used().is_some());
        assert_eq!(scheduling_policy(std::process::id()), Some(0));
    }

    #[test]
    fn a_thread_can_put_itself_in_the_idle_class() {
        let policy = std::thread::spawn(|| {
            idle_class().unwrap();
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            policy_in(&format!("/proc/self/task/{tid}/stat"))
        })
        .join()
        .unwrap();
        assert_eq!(policy, Some(5), "SCHED_IDLE");
    }
}
