//! Per-call time budget, enforced by an instruction-count hook on the Lua state.
//!
//! One global hook per state runs every [`INSTRUCTIONS_PER_CHECK`] instructions.
//! It finds the budget of the running call in a thread-local that [`run_async`]
//! and [`run_sync`] set around each poll or call. A poll runs synchronously on
//! one OS thread, so the thread-local names the call that the instructions
//! belong to, even with many calls in flight on one state.
//!
//! Past the deadline the hook alternates between yielding and raising an error.
//! A yield of the call's own thread cannot be caught by `pcall`, so the poll
//! returns and the call is dropped. A yield inside a coroutine the script created
//! returns to the code that resumed it. Below a C function such as `table.sort`
//! Lua cannot yield, and the error ends the C function.
//!
//! NOTE: the hook runs between Lua instructions only, so one long call into a C
//! function (such as `string.find` with a pathological pattern) runs to its end
//! before the time limit applies.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use humantime::format_duration;
use mlua::{HookTriggers, Lua, VmState};

/// Lua instructions between two deadline checks. A check costs a clock read, so
/// this keeps the overhead small while a tight loop is stopped within
/// microseconds of its deadline.
pub const INSTRUCTIONS_PER_CHECK: u32 = 1000;

/// Time a call may run before it yields to let other tasks use the worker
/// thread and other calls use the Lua state. A task that is always ready
/// delays the runtime's timers and sockets by up to 61 polls on tokio's
/// current-thread scheduler, so a slice of 2 ms keeps that delay near 120 ms.
const TIME_SLICE: Duration = Duration::from_millis(2);

thread_local! {
    static ACTIVE: RefCell<Option<Arc<CallBudget>>> = const { RefCell::new(None) };
}

/// Time budget of one hook call or of one file's top-level code.
#[derive(Debug)]
pub(crate) struct CallBudget {
    /// Name used in logs and errors: the hook function or the file being loaded.
    label: String,
    limit: Duration,
    deadline: Instant,
    /// Address of the Lua thread the call runs on, when it has its own thread.
    thread: Option<usize>,
    expired: AtomicBool,
    overdue_checks: AtomicU32,
    slice_started: Mutex<Instant>,
}

impl CallBudget {
    pub(crate) fn new(label: impl Into<String>, limit: Duration, thread: Option<usize>) -> Self {
        let now = Instant::now();
        CallBudget {
            label: label.into(),
            limit,
            deadline: now + limit,
            thread,
            expired: AtomicBool::new(false),
            overdue_checks: AtomicU32::new(0),
            slice_started: Mutex::new(now),
        }
    }

    pub(crate) fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }

    fn mark_expired(&self) {
        self.expired.store(true, Ordering::Relaxed);
    }

    fn timeout_message(&self) -> String {
        format!(
            "{} exceeded its time limit of {}",
            self.label,
            format_duration(self.limit)
        )
    }

    /// Decides what the instruction-count hook does for this call.
    fn check(&self, lua: &Lua) -> mlua::Result<VmState> {
        let now = Instant::now();
        if now >= self.deadline {
            self.mark_expired();
            let attempt = self.overdue_checks.fetch_add(1, Ordering::Relaxed);
            if attempt.is_multiple_of(2) {
                return Ok(VmState::Yield);
            }
            return Err(mlua::Error::runtime(self.timeout_message()));
        }

        let mut slice_started = self
            .slice_started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.duration_since(*slice_started) >= TIME_SLICE && self.is_running_on_own_thread(lua) {
            *slice_started = now;
            return Ok(VmState::Yield);
        }
        Ok(VmState::Continue)
    }

    /// Reports whether Lua is executing the call's own thread and not a coroutine
    /// the script created, where a yield would resume the script's own code.
    fn is_running_on_own_thread(&self, lua: &Lua) -> bool {
        match self.thread {
            Some(thread) => lua.current_thread().to_pointer() as usize == thread,
            None => false,
        }
    }
}

/// Marks a budget as the active one on this OS thread until dropped.
pub(crate) struct ActiveGuard {
    previous: Option<Arc<CallBudget>>,
}

impl ActiveGuard {
    pub(crate) fn enter(budget: &Arc<CallBudget>) -> Self {
        let previous = ACTIVE.with(|active| active.borrow_mut().replace(Arc::clone(budget)));
        ActiveGuard { previous }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        ACTIVE.with(|active| *active.borrow_mut() = previous);
    }
}

/// Returns the label of the call running on this OS thread, if any.
pub(crate) fn active_label() -> Option<String> {
    ACTIVE.with(|active| active.borrow().as_ref().map(|budget| budget.label.clone()))
}

/// Installs the instruction-count hook on a state. Threads created later inherit it.
pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
    let triggers = HookTriggers::new().every_nth_instruction(INSTRUCTIONS_PER_CHECK);
    lua.set_global_hook(triggers, |lua, _debug| {
        let budget = ACTIVE.with(|active| active.borrow().clone());
        match budget {
            Some(budget) => budget.check(lua),
            None => Ok(VmState::Continue),
        }
    })
}

/// End of a budgeted call that did not return a value.
#[derive(Debug)]
pub(crate) enum Interrupted {
    TimedOut,
    Failed(mlua::Error),
}

/// Runs a synchronous Lua call under a budget.
pub(crate) fn run_sync<T>(
    budget: &Arc<CallBudget>,
    call: impl FnOnce() -> mlua::Result<T>,
) -> Result<T, Interrupted> {
    let result = {
        let _guard = ActiveGuard::enter(budget);
        call()
    };
    match result {
        _ if budget.is_expired() => Err(Interrupted::TimedOut),
        Ok(value) => Ok(value),
        Err(err) => Err(Interrupted::Failed(err)),
    }
}

/// Runs an asynchronous Lua call under a budget. Awaits count against the
/// deadline, so a hook sleeping past it is stopped too.
pub(crate) async fn run_async<T, F>(budget: Arc<CallBudget>, call: F) -> Result<T, Interrupted>
where
    F: Future<Output = mlua::Result<T>>,
{
    let deadline = tokio::time::Instant::from_std(budget.deadline);
    let budgeted = Budgeted {
        call: Box::pin(call),
        budget: Arc::clone(&budget),
    };
    match tokio::time::timeout_at(deadline, budgeted).await {
        Ok(result) => result,
        Err(_elapsed) => {
            budget.mark_expired();
            Err(Interrupted::TimedOut)
        }
    }
}

/// Future that marks its budget active on the polling thread during each poll.
struct Budgeted<F> {
    call: Pin<Box<F>>,
    budget: Arc<CallBudget>,
}

impl<T, F> Future for Budgeted<F>
where
    F: Future<Output = mlua::Result<T>>,
{
    type Output = Result<T, Interrupted>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let polled = {
            let _guard = ActiveGuard::enter(&this.budget);
            this.call.as_mut().poll(cx)
        };
        // A call that returns after the hook acted on the deadline may have been
        // cut short inside a coroutine, so its value is not trusted.
        match polled {
            Poll::Ready(_) | Poll::Pending if this.budget.is_expired() => {
                Poll::Ready(Err(Interrupted::TimedOut))
            }
            Poll::Ready(Ok(value)) => Poll::Ready(Ok(value)),
            Poll::Ready(Err(err)) => Poll::Ready(Err(Interrupted::Failed(err))),
            Poll::Pending => Poll::Pending,
        }
    }
}
