//! The Lua scripts: each decision, and each queued write, is one script call (`EVALSHA`,
//! loaded again by the client if the server forgot it), atomic on the server.

use std::sync::LazyLock;

use ::redis::Script;

/// The rate limiter's decision: both GCRAs, all or nothing.
pub(crate) static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("acquire.lua")));

/// The rate limiter's corrections: reconciliation and pauses.
pub(crate) static ADJUST: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("adjust.lua")));

/// The budget: reserve, settle, release, renew, snapshot.
pub(crate) static BUDGET: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("budget.lua")));

/// The ledger: one response's cost.
pub(crate) static LEDGER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("ledger.lua")));

/// The ledger, read.
pub(crate) static LEDGER_READ: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("ledger_read.lua")));
