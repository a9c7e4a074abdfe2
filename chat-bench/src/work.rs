//! Running `n` jobs over a fixed number of worker tasks, each with its own state (typically a
//! keep-alive HTTP connection), stopping everyone at the first failure.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::Result;

/// Runs `job(state, i)` for every `i` in `0..n`, spread over one task per element of
/// `states`; returns the results in index order. The first error stops every worker and is
/// returned. `done` counts finished jobs (for progress lines).
pub async fn run<S, T, F, Fut>(
    n: usize,
    states: Vec<S>,
    done: Arc<AtomicUsize>,
    job: F,
) -> Result<Vec<T>>
where
    S: Send + 'static,
    T: Send + 'static,
    F: Fn(S, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (S, Result<T>)> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let job = Arc::new(job);
    let mut tasks = tokio::task::JoinSet::new();
    for state in states {
        let (next, failed, job, done) = (next.clone(), failed.clone(), job.clone(), done.clone());
        tasks.spawn(async move {
            let mut state = state;
            let mut out = Vec::new();
            loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(out);
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(out);
                }
                let (s, r) = job(state, i).await;
                state = s;
                match r {
                    Ok(t) => {
                        out.push((i, t));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(part)) => all.extend(part),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(format!("worker task failed: {e}").into());
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if all.len() != n {
        return Err(format!("{} of {n} jobs ran", all.len()).into());
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_come_back_in_order_and_errors_stop_the_run() {
        let done = Arc::new(AtomicUsize::new(0));
        let out = run(100, vec![(); 7], done.clone(), |s, i| async move {
            (s, Ok(i * 2))
        })
        .await
        .unwrap();
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(done.load(Ordering::Relaxed), 100);

        let err = run(
            100,
            vec![(); 3],
            Arc::new(AtomicUsize::new(0)),
            |s, i| async move {
                if i == 42 {
                    (s, Err("boom".into()))
                } else {
                    (s, Ok(i))
                }
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }
}
