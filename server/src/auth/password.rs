//! Passwords hashed with argon2id (PHC strings). Hashing is slow on purpose and takes 19 MiB
//! per call: handlers go through [`verify_off_thread`] and [`hash_off_thread`], which run it on
//! a few threads of its own.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::AppError;

/// Hashes a password with a fresh salt.
pub fn hash(password: &str) -> Result<String, AppError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(format!("password hash: {e}")))
}

/// Whether the password matches the stored hash.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A job for the hashing threads.
type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads' queue. Hashing runs on a few threads of its own, one per core: more
/// would not finish sooner, and each hashing takes 19 MiB. On the blocking pool's many threads
/// the allocator kept those blocks scattered over its arenas: 200 phones signing in at once took
/// the server to 3.9 GiB, and a second wave to more.
fn hashing_queue() -> &'static std::sync::mpsc::Sender<Job> {
    static QUEUE: std::sync::OnceLock<std::sync::mpsc::Sender<Job>> = std::sync::OnceLock::new();
    QUEUE.get_or_init(|| {
        let (send, receive) = std::sync::mpsc::channel::<Job>();
        let receive = std::sync::Arc::new(std::sync::Mutex::new(receive));
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        for i in 0..cores {
            let receive = receive.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    loop {
                        let job = receive
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("password thread: {e}");
            }
        }
        send
    })
}

/// Runs `work` on the hashing threads and waits for it without blocking an async worker.
async fn limited<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(work());
    });
    hashing_queue()
        .send(job)
        .map_err(|_| AppError::Internal("password threads stopped".into()))?;
    answered
        .await
        .map_err(|_| AppError::Internal("password task failed".into()))
}

/// [`verify`] off the async workers, a few at a time.
pub async fn verify_off_thread(password: String, stored: String) -> Result<bool, AppError> {
    limited(move || verify(&password, &stored)).await
}

/// [`hash`] off the async workers, a few at a time.
pub async fn hash_off_thread(password: String) -> Result<String, AppError> {
    limited(move || hash(&password)).await?
}

/// A hash to verify against when the account does not exist, so that an unknown user costs as
/// much time as a wrong password and the two cannot be told apart.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy password, never valid").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse", &stored));
        assert!(!verify("correct horse ", &stored));
        assert!(!verify("x", "not a hash"));
        assert_ne!(hash("correct horse").unwrap(), stored, "salted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_hashings_run_at_once_than_there_are_cores() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        static MOST: AtomicUsize = AtomicUsize::new(0);
        let tasks: Vec<_> = (0..24)
            .map(|_| {
                tokio::spawn(limited(|| {
                    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                    MOST.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    RUNNING.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let most = MOST.load(Ordering::SeqCst);
        assert!(
            most >= 1 && most <= cores,
            "{most} at once, {cores} permits"
        );
    }
}
