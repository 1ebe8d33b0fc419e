//! Many files on every core, with the results (and the error) a plain loop would give.

use std::num::NonZeroUsize;
use std::panic;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// `f` over `items` on as many threads as the machine offers (`available_parallelism`,
/// which heeds CPU affinity and cgroup quotas), results in the order of `items`.
///
/// Returns the error of the first item in that order that fails, as a loop that stops
/// there would: items after a failed one may be skipped, items before it never are, so
/// the same input always gives the same error.
pub(crate) fn try_map_in_order<T, R, E>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let threads = thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    // The lowest index that failed so far: nothing after it needs doing.
    let failed_at = AtomicUsize::new(usize::MAX);
    let work = || {
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= items.len() || index > failed_at.load(Ordering::Relaxed) {
                return done;
            }
            let result = f(&items[index]);
            if result.is_err() {
                failed_at.fetch_min(index, Ordering::Relaxed);
            }
            done.push((index, result));
        }
    };
    let mut results: Vec<(usize, Result<R, E>)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_else(|p| panic::resume_unwind(p)))
            .collect()
    });
    // Every index up to the first failure is present, so this stops at that failure.
    results.sort_unstable_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::try_map_in_order;

    #[test]
    fn results_keep_the_order_of_the_items() {
        let items: Vec<u32> = (0..1000).collect();
        let doubled = try_map_in_order(&items, |n| Ok::<_, ()>(n * 2)).unwrap();
        assert_eq!(doubled, items.iter().map(|n| n * 2).collect::<Vec<_>>());
    }

    #[test]
    fn the_first_failure_in_item_order_is_reported() {
        let items: Vec<u32> = (0..1000).collect();
        for _ in 0..20 {
            let result = try_map_in_order(&items, |&n| if n % 97 == 13 { Err(n) } else { Ok(n) });
            assert_eq!(result, Err(13));
        }
    }

    #[test]
    fn no_items_no_work() {
        let result = try_map_in_order(&[] as &[u8], |_| -> Result<u8, ()> { unreachable!() });
        assert_eq!(result, Ok(Vec::new()));
    }
}
