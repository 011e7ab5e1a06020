//! How much of the node one caller may take at once: reads running at the
//! same time (per caller, for anonymous callers together, and for the node),
//! password checks in flight, and sign-in attempts per account.
//!
//! Node-local on purpose: each node protects its own cores and memory. Time
//! comes from the service's clock, so tests control the windows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use citytrust_model::Actor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Result, Service, ServiceError};

/// Reads (downloads, queries, tables, statistics, look-ups) one signed-in
/// caller may have running at once.
pub const READS_PER_CALLER: usize = 2;
/// Reads all anonymous callers together may have running at once.
pub const ANONYMOUS_READS: usize = 2;
/// Reads a node runs at once; more wait up to [`READ_QUEUE_SECONDS`].
pub const READS_PER_NODE: usize = 4;
pub const READ_QUEUE_SECONDS: u64 = 10;
/// Password checks (argon2id: ~19 MiB and a core each) at once; more wait.
pub const PASSWORD_CHECKS: usize = 2;
/// Failed sign-ins an account takes in [`SIGN_IN_WINDOW_MINUTES`] before
/// further attempts are refused until the window has passed.
pub const SIGN_IN_FAILURES: usize = 10;
pub const SIGN_IN_WINDOW_MINUTES: i64 = 15;

pub(crate) struct Throttle {
    node_reads: Arc<Semaphore>,
    /// Each caller's own places (anonymous callers share one entry).
    callers: Mutex<HashMap<String, Arc<Semaphore>>>,
    passwords: Arc<Semaphore>,
    /// Failed sign-ins per username: when each happened (unix seconds).
    failures: Mutex<HashMap<String, Vec<i64>>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            node_reads: Arc::new(Semaphore::new(READS_PER_NODE)),
            callers: Mutex::new(HashMap::new()),
            passwords: Arc::new(Semaphore::new(PASSWORD_CHECKS)),
            failures: Mutex::new(HashMap::new()),
        }
    }
}

/// Reads a signed-in caller may have waiting for a place; more are refused at once.
pub const READS_WAITING_PER_CALLER: usize = 32;
/// Reads all anonymous callers together may have waiting (a public portal's
/// visitors are all anonymous).
pub const ANONYMOUS_READS_WAITING: usize = 256;

/// A read's place: held while it runs, given back when dropped.
pub struct ReadSlot {
    _caller: OwnedSemaphorePermit,
    _node: OwnedSemaphorePermit,
}

/// Whose places a read takes: the caller's key, how many run, how many wait.
fn caller_key(actor: &Actor) -> (String, usize, usize) {
    match actor.username() {
        Some(u) => (
            format!("user:{u}"),
            READS_PER_CALLER,
            READS_WAITING_PER_CALLER,
        ),
        None => (
            "anonymous".to_string(),
            ANONYMOUS_READS,
            ANONYMOUS_READS_WAITING,
        ),
    }
}

fn busy(message: String) -> ServiceError {
    ServiceError::TooMany {
        retry_after_seconds: 5,
        message,
    }
}

/// The key failures are counted under (bounded in length).
fn failure_key(username: &str) -> String {
    username.chars().take(200).collect()
}

impl Service {
    /// A place for one read of `actor`'s: at most [`READS_PER_CALLER`] of a
    /// caller's run at once (anonymous callers share [`ANONYMOUS_READS`]),
    /// and [`READS_PER_NODE`] on the node; the rest wait their turn for up to
    /// [`READ_QUEUE_SECONDS`], and a caller with [`READS_WAITING_PER_CALLER`]
    /// waiting already is refused at once (429).
    pub(crate) async fn read_slot(&self, actor: &Actor) -> Result<ReadSlot> {
        let (caller, limit, waiting) = caller_key(actor);
        let places = {
            let mut callers = self
                .throttle
                .callers
                .lock()
                .map_err(|_| ServiceError::Internal("read slots".into()))?;
            if callers.len() > 10_000 {
                // Forget callers with nothing running or waiting.
                callers.retain(|_, s| Arc::strong_count(s) > 1);
            }
            callers
                .entry(caller)
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone()
        };
        // Everyone holding this Arc but the map is running or waiting.
        if Arc::strong_count(&places) > limit + waiting + 1 {
            return Err(busy(if actor.username().is_some() {
                format!(
                    "you have {limit} reads running and {waiting} waiting already; wait for \
                     them to finish"
                )
            } else {
                "too many reads without signing in are running or waiting; try again \
                 shortly, or sign in"
                    .into()
            }));
        }
        let wait = std::time::Duration::from_secs(READ_QUEUE_SECONDS);
        let full =
            || busy("the server is answering as many reads as it can; try again shortly".into());
        let caller = tokio::time::timeout(wait, places.acquire_owned())
            .await
            .map_err(|_| full())?
            .map_err(|_| ServiceError::Internal("read slots".into()))?;
        let node = tokio::time::timeout(wait, self.throttle.node_reads.clone().acquire_owned())
            .await
            .map_err(|_| full())?
            .map_err(|_| ServiceError::Internal("read slots".into()))?;
        Ok(ReadSlot {
            _caller: caller,
            _node: node,
        })
    }

    /// Refuse a sign-in for `username` while it has had too many failures
    /// lately (before any password is checked).
    pub(crate) fn sign_in_allowed(&self, username: &str) -> Result<()> {
        let now = self.now().unix_timestamp();
        let window = SIGN_IN_WINDOW_MINUTES * 60;
        let mut failures = self
            .throttle
            .failures
            .lock()
            .map_err(|_| ServiceError::Internal("sign-in failures".into()))?;
        let key = failure_key(username);
        let Some(times) = failures.get_mut(&key) else {
            return Ok(());
        };
        times.retain(|t| now - t < window);
        if times.len() >= SIGN_IN_FAILURES {
            let wait = times.first().map(|t| window - (now - t)).unwrap_or(window);
            return Err(ServiceError::TooMany {
                retry_after_seconds: wait.max(1) as u64,
                message: format!(
                    "too many failed sign-ins for this account in the last {SIGN_IN_WINDOW_MINUTES} \
                     minutes; try again in {} minute(s)",
                    (wait + 59) / 60
                ),
            });
        }
        if times.is_empty() {
            failures.remove(&key);
        }
        Ok(())
    }

    pub(crate) fn sign_in_failed(&self, username: &str) {
        let now = self.now().unix_timestamp();
        if let Ok(mut failures) = self.throttle.failures.lock() {
            // Bounded: an attacker inventing usernames fills at most this many.
            if failures.len() > 100_000 {
                failures.clear();
            }
            failures.entry(failure_key(username)).or_default().push(now);
        }
    }

    /// One of the node's few places to check a password.
    pub(crate) async fn password_check_slot(&self) -> Result<OwnedSemaphorePermit> {
        self.throttle
            .passwords
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServiceError::Internal("password checks".into()))
    }
}
