//! A minimal tracing capture for tests: what events a piece of code emits on this thread.
//!
//! One global subscriber, interested in everything, is installed once per test binary, and
//! routes each event to the capture active on the current thread, if any. (A thread-local
//! default subscriber would race with tracing's per-callsite interest cache: a test on another
//! thread that hits a callsite first, with no subscriber, can cache "never" for it.) Run the
//! code under test on the capturing thread: a plain function, or a current-thread runtime.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::sync::Once;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// An event as captured: its level, target, and fields as `name=value` text.
#[derive(Debug, Clone)]
pub struct Captured {
    pub level: Level,
    pub target: String,
    pub text: String,
}

thread_local! {
    static EVENTS: RefCell<Option<Vec<Captured>>> = const { RefCell::new(None) };
}

struct Global;

impl Subscriber for Global {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }

    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        EVENTS.with(|events| {
            if let Some(events) = events.borrow_mut().as_mut() {
                let mut text = String::new();
                event.record(&mut Text(&mut text));
                events.push(Captured {
                    level: *event.metadata().level(),
                    target: event.metadata().target().to_owned(),
                    text,
                });
            }
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

struct Text<'a>(&'a mut String);

impl Visit for Text<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

/// Runs `f` and returns its result with the events it emitted on this thread.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<Captured>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Global).expect("the only global subscriber");
    });
    EVENTS.with(|events| *events.borrow_mut() = Some(Vec::new()));
    let result = f();
    let events = EVENTS.with(|events| events.borrow_mut().take().unwrap_or_default());
    (result, events)
}
