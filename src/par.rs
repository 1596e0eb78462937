//! Work split over two threads. The machines tortie is measured on have
//! two cores, and the large one-off jobs (a cluster's first build, a full
//! compile) have halves that only read shared state. When no thread can
//! be had, both halves run here, one after the other: same result.

/// Runs `a` on a scoped second thread and `b` on this one; both results.
/// A panic in either is raised here.
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB,
    RA: Send,
{
    // Shared, not moved, so that it can still run here if no thread starts.
    let a = std::sync::Mutex::new(Some(a));
    let take = || {
        let f = a.lock().unwrap_or_else(|e| e.into_inner()).take();
        f.expect("each half runs once")
    };
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("tortie-half".into())
            .spawn_scoped(s, || take()());
        let rb = b();
        let ra = match handle {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(_) => take()(),
        };
        (ra, rb)
    })
}

/// `f` of every item, in order, computed by two threads ([`join`]) that
/// take the items one at a time (their costs may differ widely); on one
/// thread when there are fewer than `min` items.
pub fn map<T, R, F>(items: &[T], min: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    if items.len() < min.max(2) {
        return items.iter().map(&f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(i) else { break done };
            done.push((i, f(item)));
        }
    };
    let (a, b) = join(work, work);
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    for (i, r) in a.into_iter().chain(b) {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|r| r.expect("every item taken once"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_returns_both_results_and_runs_a_elsewhere() {
        let here = std::thread::current().id();
        let (a, b) = join(|| std::thread::current().id(), || 7);
        assert_ne!(a, here, "the first half runs on a second thread");
        assert_eq!(b, 7);
    }

    #[test]
    fn map_keeps_order_on_both_sides_of_the_threshold() {
        let items: Vec<u32> = (0..1001).collect();
        let want: Vec<u64> = items.iter().map(|i| u64::from(*i) * 3).collect();
        assert_eq!(map(&items, 10, |i| u64::from(*i) * 3), want);
        assert_eq!(map(&items, 5000, |i| u64::from(*i) * 3), want);
        assert_eq!(map(&items[..1], 0, |i| *i), vec![0]);
        assert!(map(&items[..0], 0, |i| *i).is_empty());
    }

    #[test]
    #[should_panic(expected = "half a")]
    fn a_panic_on_the_second_thread_is_raised_here() {
        join(|| panic!("half a"), || ());
    }
}
