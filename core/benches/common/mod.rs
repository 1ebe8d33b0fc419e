//! What the benches share: timing by CPU time, to compare with `openssl speed` (which
//! divides by its own CPU time) on a machine that other work keeps busy.

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{Bencher, BenchmarkGroup, Criterion};

/// This thread's CPU time so far, from Linux's `/proc/thread-self/schedstat`; `None`
/// elsewhere. The kernel updates it at scheduler ticks (a few milliseconds), so it takes
/// long samples: see [`cpu_group`].
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// A group for [`iter_cpu`] benches: 10 samples instead of 100, so that with the default
/// 5 s each sample runs 90 ms or more, and a tick of rounding is a few percent of the
/// shortest sample and averages out in the slope estimate.
pub(crate) fn cpu_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group
}

/// Times `routine` by this thread's CPU time where the system tells it (as `openssl
/// speed` times itself), else by the clock.
pub(crate) fn iter_cpu<O>(b: &mut Bencher<'_>, mut routine: impl FnMut() -> O) {
    b.iter_custom(|iters| {
        let (cpu, wall) = (thread_cpu_time(), Instant::now());
        for _ in 0..iters {
            std::hint::black_box(routine());
        }
        match (cpu, thread_cpu_time()) {
            (Some(start), Some(end)) if end > start => end - start,
            _ => wall.elapsed(),
        }
    });
}
