//! The hashing threads: a fixed set of low-priority threads fed by one queue, each keeping
//! its argon2 block while logins come and giving it back to the system once idle.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use super::reused_memory;
use crate::Error;

/// Work for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// A hashing thread idle this long gives its argon2 block back to the system.
pub(super) const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// The hashing threads, fed by one queue; they end when the last [`super::Hasher`] clone is dropped.
///
/// Dedicated threads rather than tokio's blocking pool because of memory: argon2 allocates
/// its whole memory cost (19 MiB by default) for each hash, and glibc's malloc keeps such a
/// block cached in the arena of the thread that freed it. The blocking pool spreads hashes
/// over many threads, hence many arenas: the benchmark saw the server's RSS reach ~470 MiB
/// after a burst of logins. With a fixed set of threads each keeps one block
/// (`reused_memory`) while logins come, so a busy server pays no allocation per hash; a
/// thread idle for `idle` frees its block and asks malloc to return it
/// (`reused_memory::release`), so that after a burst the server's RSS falls back to its
/// idle size instead of holding 19 MiB per thread forever (the bench checks it).
///
/// A flume queue (multi-consumer, so each thread waits with its own timeout) rather than a
/// rayon pool: the bounds live in front of it, in [`super::Hasher::run_blocking`] (the semaphore
/// keeps at most one job per thread queued or running, waiting for it has the queue timeout,
/// and a job whose caller has gone is skipped), so the queue itself needs none. rayon would
/// add work stealing and no idle release.
#[derive(Clone)]
pub(super) struct HashThreads {
    queue: flume::Sender<Job>,
    /// The bytes of argon2 memory each thread holds, for [`super::Hasher::memory_held`].
    pub(super) held: Arc<[AtomicUsize]>,
}

impl HashThreads {
    pub(super) fn start(n: usize, idle: Duration) -> Result<Self, Error> {
        let (queue, jobs) = flume::unbounded::<Job>();
        let held: Arc<[AtomicUsize]> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        for i in 0..n {
            let jobs = jobs.clone();
            let held = held.clone();
            std::thread::Builder::new()
                .name(format!("produto-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // Holding a block, wait at most `idle` for the next job; holding
                        // none, there is nothing to give back, so wait as long as it takes.
                        let job = if held[i].load(Relaxed) > 0 {
                            jobs.recv_timeout(idle)
                        } else {
                            jobs.recv()
                                .map_err(|_| flume::RecvTimeoutError::Disconnected)
                        };
                        match job {
                            // A panicking hash must not take the thread with it; its
                            // caller sees the dropped reply as an internal error.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                                held[i].store(reused_memory::held_bytes(), Relaxed);
                            }
                            Err(flume::RecvTimeoutError::Timeout) => {
                                reused_memory::release();
                                held[i].store(0, Relaxed);
                            }
                            Err(flume::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                })
                .map_err(|e| Error::Startup(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(HashThreads { queue, held })
    }

    pub(super) fn run(&self, job: Job) -> Result<(), Error> {
        self.queue
            .send(job)
            .map_err(|_| Error::Internal("hashing threads stopped".into()))
    }
}

/// Lowers the calling thread's scheduling priority (nice 10), so that while logins saturate
/// the hashing threads the cheap RPCs, the runtime and a local database still get the CPU
/// first; with the CPU otherwise idle, hashing runs at full speed all the same.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority has no memory effects. On Linux, PRIO_PROCESS with who = 0
        // applies to the calling thread only (threads have their own nice value).
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASH_THREAD_NICE) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not lower the hashing thread's priority"
            );
        }
    }
}

/// The nice value of the hashing threads (0 is normal, 19 the lowest priority).
#[cfg(target_os = "linux")]
const HASH_THREAD_NICE: libc::c_int = 10;
