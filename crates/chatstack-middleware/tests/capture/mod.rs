//! A tracing layer that keeps everything it sees, for the tests of every layer that emits
//! spans or events: every span with its fields (as recorded, in order), every event with
//! its fields and its span, and all of it as flat text to search for secrets.
//!
//! Install it per test with [`Capture::install`]. What it captures is per thread, so tests
//! running in parallel do not see each other's output; run the test on a current-thread
//! runtime so that every task polls on the test's thread.
//!
//! Why not a thread-local default subscriber: tracing caches each callsite's interest when
//! the callsite is first hit. A test on another thread that hits a callsite first, with no
//! subscriber, can cache "never" at the moment this test installs its own, and the event is
//! lost (a flaky test). So one global subscriber, interested in everything, is installed
//! once per test binary, and it routes what it sees to the capture installed on the current
//! thread, if any.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, Once};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as the capture saw it.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub name: &'static str,
    /// Field values, formatted with `Debug` (strings without quotes).
    pub fields: BTreeMap<String, String>,
    /// The index of the parent span in [`Capture::spans`].
    pub parent: Option<usize>,
    pub closed: bool,
}

impl SpanRecord {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// An event as the capture saw it.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub level: Level,
    pub target: String,
    pub fields: BTreeMap<String, String>,
    /// The index of its span in [`Capture::spans`].
    pub span: Option<usize>,
}

impl EventRecord {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Inner {
    spans: Vec<SpanRecord>,
    /// Live span ids to their index (ids are reused after a span closes).
    live: HashMap<u64, usize>,
    events: Vec<EventRecord>,
    text: String,
}

/// The capturing layer; clones share what was captured.
#[derive(Clone, Default)]
pub struct Capture {
    inner: Arc<Mutex<Inner>>,
}

/// Keeps the capture installed on this thread until dropped.
pub struct Installed {
    previous: Option<Capture>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|current| *current.borrow_mut() = self.previous.take());
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

/// The global layer: hands everything to the capture installed on the current thread.
struct Router;

fn current() -> Option<Capture> {
    CURRENT.with(|current| current.borrow().clone())
}

impl<S> Layer<S> for Router
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(capture) = current() {
            capture.on_new_span(attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(capture) = current() {
            capture.on_record(id, values, ctx);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(capture) = current() {
            capture.on_event(event, ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(capture) = current() {
            capture.on_close(id, ctx);
        }
    }
}

impl Capture {
    /// Starts capturing what this thread emits, at every level, until the returned guard is
    /// dropped.
    pub fn install(&self) -> Installed {
        static GLOBAL: Once = Once::new();
        GLOBAL.call_once(|| {
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Router))
                .expect("no other global subscriber in a test binary that captures");
        });
        let previous = CURRENT.with(|current| current.borrow_mut().replace(self.clone()));
        Installed { previous }
    }

    pub fn spans(&self) -> Vec<SpanRecord> {
        self.inner.lock().unwrap().spans.clone()
    }

    /// The spans with this name, in the order they were opened.
    pub fn spans_named(&self, name: &str) -> Vec<SpanRecord> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    pub fn events(&self) -> Vec<EventRecord> {
        self.inner.lock().unwrap().events.clone()
    }

    /// Everything seen, as text: span names, event targets, every field name and value.
    pub fn text(&self) -> String {
        self.inner.lock().unwrap().text.clone()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

fn as_text(fields: &BTreeMap<String, String>) -> String {
    fields
        .iter()
        .map(|(name, value)| format!(" {name}={value}"))
        .collect()
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut inner = self.inner.lock().unwrap();
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .and_then(|parent| inner.live.get(&parent.id().into_u64()).copied());
        let name = attrs.metadata().name();
        let line = format!(
            "span {name} {}{}\n",
            attrs.metadata().target(),
            as_text(&fields)
        );
        inner.text.push_str(&line);
        let index = inner.spans.len();
        inner.spans.push(SpanRecord {
            name,
            fields,
            parent,
            closed: false,
        });
        inner.live.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut recorded = BTreeMap::new();
        values.record(&mut Fields(&mut recorded));
        let mut inner = self.inner.lock().unwrap();
        let line = format!("record{}\n", as_text(&recorded));
        inner.text.push_str(&line);
        if let Some(&index) = inner.live.get(&id.into_u64()) {
            inner.spans[index].fields.extend(recorded);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let mut inner = self.inner.lock().unwrap();
        let span = ctx
            .event_span(event)
            .and_then(|span| inner.live.get(&span.id().into_u64()).copied());
        let metadata = event.metadata();
        let line = format!(
            "event {} {}{}\n",
            metadata.level(),
            metadata.target(),
            as_text(&fields)
        );
        inner.text.push_str(&line);
        inner.events.push(EventRecord {
            level: *metadata.level(),
            target: metadata.target().to_owned(),
            fields,
            span,
        });
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(index) = inner.live.remove(&id.into_u64()) {
            inner.spans[index].closed = true;
        }
    }
}
