//! The async runtime of the API and of a worker.

/// One thread (`API_THREADS`, `WORKER_THREADS` = 1, the default) gives a
/// current-thread runtime; more, a multi-threaded one with that many.
///
/// One is the default for both processes: under the benchmark's load, handing
/// tasks between runtime threads cost more than it gained. The Temporal SDK
/// keeps workflows on a thread of its own, and SQLite statements run on the
/// calling thread (`db::open_with`). Back to back, one thread instead of two
/// cut the workers' CPU against Temporal's by about a tenth, and the API's
/// likewise (A/T 0.073 with two, 0.064-0.068 with one; BENCHMARKS.md).
///
/// What it trades: a SQLite statement that waits for another process's write
/// lock (up to its busy timeout) holds up every other task of the process on
/// one thread; with more threads only the task that waits. A process that
/// needs more than a core gets more threads, or more processes.
pub fn build(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    Ok(builder.enable_all().build()?)
}
