//! Running a library call from Python: on a worker thread with the GIL
//! released, while the calling thread wakes every 100 ms to check for
//! Ctrl-C and to report progress. On an interrupt the worker is stopped at
//! its next progress point (between tensors or batches) by unwinding out of
//! the library's progress callback, which drops every uncommitted output
//! (resid-io's atomic files); the caller then raises `KeyboardInterrupt`.
//! Every panic of the work becomes `resid.InternalError`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors::Failure;

/// What the worker and the calling thread share.
#[derive(Default)]
pub struct Shared {
    cancel: AtomicBool,
    done: AtomicU64,
    total: AtomicU64,
    name: Mutex<String>,
    finished: Mutex<bool>,
    wake: Condvar,
}

/// The panic payload that stops a cancelled call.
struct Cancelled;

/// Calls being cancelled: their unwinding (and the panics the libraries'
/// thread joins raise from it) prints nothing.
static CANCELLING: AtomicUsize = AtomicUsize::new(0);

impl Shared {
    /// A progress point: stops the work here when the caller cancelled.
    pub fn checkpoint(&self) {
        if self.cancel.load(Ordering::Relaxed) {
            std::panic::panic_any(Cancelled);
        }
    }

    /// Sets the progress total (tensors or bytes).
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// Progress: `done` of the total, at tensor `name`.
    pub fn set(&self, done: u64, total: u64, name: &str) {
        self.checkpoint();
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        if let Ok(mut n) = self.name.lock() {
            n.clear();
            n.push_str(name);
        }
    }

    /// Progress: `n` more done.
    pub fn advance(&self, n: u64) {
        self.checkpoint();
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    fn finish(&self) {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Waits up to `d` for the work to finish; true when it has.
    fn wait(&self, d: Duration) -> bool {
        let g = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .wake
            .wait_timeout_while(g, d, |f| !*f)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    fn snapshot(&self) -> (u64, u64, String) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
            self.name.lock().map(|n| n.clone()).unwrap_or_default(),
        )
    }
}

/// Installs (once) the panic hook that keeps cancellations quiet.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().is::<Cancelled>() || CANCELLING.load(Ordering::SeqCst) > 0 {
                return;
            }
            prev(info)
        }));
    });
}

/// Runs `work` on a worker thread (8 MiB of stack, as a main thread has)
/// with the GIL released; `progress(done, total, name)` is called on this
/// thread when the figures change. Ctrl-C, or an exception raised by
/// `progress`, cancels the work and is raised once the worker has stopped.
pub fn run<T: Send>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&Shared) -> Result<T, Failure> + Send,
) -> PyResult<T> {
    let shared = Shared::default();
    let outcome = std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("resid".into())
            .stack_size(8 << 20)
            .spawn_scoped(s, || {
                let r = catch_unwind(AssertUnwindSafe(|| work(&shared)));
                shared.finish();
                r
            });
        let worker = match worker {
            Ok(w) => w,
            Err(e) => {
                return Err(pyo3::exceptions::PyOSError::new_err(format!(
                    "could not start a worker thread: {e}"
                )))
            }
        };
        let mut raised: Option<PyErr> = None;
        let mut shown: Option<(u64, u64, String)> = None;
        loop {
            let finished = py.detach(|| shared.wait(Duration::from_millis(100)));
            if raised.is_none() {
                let r = py.check_signals().and_then(|()| match progress {
                    Some(cb) => {
                        let now = shared.snapshot();
                        if shown.as_ref() != Some(&now) {
                            cb.call1((now.0, now.1, now.2.as_str()))?;
                            shown = Some(now);
                        }
                        Ok(())
                    }
                    None => Ok(()),
                });
                if let Err(e) = r {
                    if !finished {
                        CANCELLING.fetch_add(1, Ordering::SeqCst);
                        shared.cancel.store(true, Ordering::Relaxed);
                    }
                    raised = Some(e);
                }
            }
            if finished {
                break;
            }
        }
        let joined = worker.join();
        if shared.cancel.load(Ordering::Relaxed) {
            CANCELLING.fetch_sub(1, Ordering::SeqCst);
        }
        match raised {
            Some(e) => Err(e),
            None => Ok(joined),
        }
    })?;
    match outcome {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(f))) => Err(f.into_pyerr(py)),
        Ok(Err(payload)) | Err(payload) => {
            Err(Failure::Panic(panic_message(&*payload)).into_pyerr(py))
        }
    }
}

/// The text of a panic payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}
