//! [`RedisLedger`]: a cost account in Redis that every process records into.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ::redis::Value;
use chatstack_proto::Error;

use super::budget::number;
use super::connection::{Call, Failure, Link, RedisConnection};
use super::outage::RedisUnavailable;
use super::scripts::{LEDGER, LEDGER_READ};
use crate::cost::{LedgerEntry, LedgerSnapshot, ResponseCost, TokenCounts, Usd};

/// The fields of an account, in the order the scripts use.
const FIELDS: [&str; 9] = [
    "requests",
    "without_usage",
    "long_context",
    "input",
    "cached_input",
    "cache_write",
    "output",
    "reasoning",
    "cost",
];

/// The backend that makes a [`CostLedger`](crate::cost::CostLedger) record into an account
/// in Redis as well, which every process with the same Redis and ledger name adds to: see
/// [`CostLedger::redis`](crate::cost::CostLedger::redis).
///
/// The process's own account stays in process (its [`snapshot`] is this process's
/// spending, as before); [`shared_snapshot`] reads the fleet's. Each record is queued (the
/// cost layer records when a response completes, and does not wait), sent in order, and
/// counted once even if sent twice; while Redis is down records wait in the queue, and none
/// is lost. Figures are exact integers: requests, tokens by category, nano-dollars.
///
/// [`snapshot`]: crate::cost::CostLedger::snapshot
/// [`shared_snapshot`]: crate::cost::CostLedger::shared_snapshot
#[derive(Clone)]
pub struct RedisLedger {
    link: Arc<Link>,
    name: Arc<str>,
    /// `{prefix:ledger:name}`: every key of the account has this hash tag.
    tag: String,
}

impl RedisLedger {
    /// The account named `name` on `connection`.
    pub fn new(connection: RedisConnection, name: impl Into<Arc<str>>) -> Self {
        let link = Arc::clone(connection.link());
        let name = name.into();
        let tag = format!("{{{}:ledger:{name}}}", link.options().prefix_str());
        Self { link, name, tag }
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues one response's cost.
    pub(crate) fn record(&self, cost: &ResponseCost, tag: Option<&str>) {
        let tokens = cost.tokens;
        let values = [
            1,
            u64::from(!cost.usage_reported),
            u64::from(cost.long_context),
            tokens.input,
            tokens.cached_input,
            tokens.cache_write,
            tokens.output,
            tokens.reasoning,
            cost.cost.as_nanos(),
        ];
        let model = Arc::clone(&cost.model);
        let tag = tag.unwrap_or_default().to_owned();
        self.link.enqueue(|seq| {
            let call = Call::new(&LEDGER, "ledger record")
                .key(self.tag.as_str())
                .key(format!("{}:seq:{}", self.tag, self.link.process()))
                .key(format!("{}:model:{model}", self.tag))
                .key(format!("{}:tag:{tag}", self.tag))
                .key(format!("{}:models", self.tag))
                .key(format!("{}:tags", self.tag))
                .arg(seq)
                .arg(&*model)
                .arg(tag);
            values.into_iter().fold(call, Call::arg)
        });
    }

    /// The account in Redis now: every process's records.
    pub(crate) async fn snapshot(&self) -> Result<LedgerSnapshot, Error> {
        let call = Call::new(&LEDGER_READ, "ledger snapshot")
            .key(self.tag.as_str())
            .key(format!("{}:models", self.tag))
            .key(format!("{}:tags", self.tag));
        let reply: Vec<Value> = self
            .link
            .eval(&call)
            .await
            .map_err(|failure| self.unavailable(&failure))?;
        parse_snapshot(&reply).ok_or_else(|| self.unavailable(&Failure::reply(&reply)))
    }

    fn unavailable(&self, failure: &Failure) -> Error {
        RedisUnavailable::error("ledger", Arc::clone(&self.name), failure.cause.clone())
    }
}

/// `{total fields..., n_models, (name, fields...)..., n_tags, (name, fields...)...}`.
fn parse_snapshot(reply: &[Value]) -> Option<LedgerSnapshot> {
    let mut values = reply.iter();
    Some(LedgerSnapshot {
        total: entry(&mut values)?,
        by_model: rows(&mut values)?,
        by_tag: rows(&mut values)?,
        ..LedgerSnapshot::default()
    })
}

/// One account's fields.
fn entry(values: &mut std::slice::Iter<'_, Value>) -> Option<LedgerEntry> {
    let mut fields = [0u64; FIELDS.len()];
    for field in &mut fields {
        *field = number(values.next()?)?;
    }
    let [
        requests,
        without_usage,
        long_context,
        input,
        cached_input,
        cache_write,
        output,
        reasoning,
        cost,
    ] = fields;
    Some(LedgerEntry {
        requests,
        without_usage,
        long_context,
        tokens: TokenCounts {
            input,
            cached_input,
            cache_write,
            output,
            reasoning,
        },
        cost: Usd::from_nanos(cost),
    })
}

/// A count, then that many named accounts.
fn rows(values: &mut std::slice::Iter<'_, Value>) -> Option<BTreeMap<String, LedgerEntry>> {
    let count = number(values.next()?)?;
    let mut rows = BTreeMap::new();
    for _ in 0..count {
        let name = match values.next()? {
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Value::SimpleString(text) => text.clone(),
            _ => return None,
        };
        rows.insert(name, entry(values)?);
    }
    Some(rows)
}

impl fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLedger")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
