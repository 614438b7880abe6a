//! Four `Client`s, as four replicas of a service would hold them, sharing one rate limiter,
//! one budget and one ledger through a real `redis-server` on loopback, against the mock
//! provider. (The layers themselves are tested in `chatstack-middleware`'s `tests/redis.rs`.)
#![cfg(feature = "redis")]

#[path = "../crates/chatstack-middleware/tests/redis_support/mod.rs"]
mod redis_support;

use std::time::Duration;

use chatstack::middleware::auth::ApiKey;
use chatstack::middleware::budget::BudgetLayer;
use chatstack::middleware::cost::{CostLedger, Usd};
use chatstack::middleware::rate_limit::{RateLimitConfig, RateLimitLayer};
use chatstack::middleware::redis::{
    RedisBudget, RedisConnection, RedisLedger, RedisLimiter, RedisUnavailable,
};
use chatstack::{ChatRequest, Client, Message};
use chatstack_mock::{MockConfig, MockServer};
use redis_support::RedisServer;

const KEY: &str = "sk-test-0123456789abcdefKEY1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_clients_with_shared_limits_behave_as_one() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let mock = MockServer::start(MockConfig::default().api_key(KEY))
        .await
        .unwrap();
    let cap = Usd::from_cents(2);
    let replicas: Vec<_> = (0..4)
        .map(|_| {
            let redis = RedisConnection::open(&server.url()).unwrap();
            let budget = BudgetLayer::redis(cap, RedisBudget::new(redis.clone(), "fleet"));
            let client = Client::builder()
                .base_url(mock.url())
                .api_key(ApiKey::new(KEY).unwrap())
                .ledger(CostLedger::redis(RedisLedger::new(redis.clone(), "fleet")))
                .shared_budget(budget.clone())
                .rate_limit_layer(RateLimitLayer::redis(
                    RateLimitConfig::default().requests_per_minute(6_000),
                    RedisLimiter::new(redis.clone()).name("fleet"),
                ))
                .build()
                .unwrap();
            (redis, budget, client)
        })
        .collect();

    let request = ChatRequest::new("gpt-4.1", [Message::user("Hello")]).max_completion_tokens(64);
    let calls: Vec<_> = replicas
        .iter()
        .flat_map(|(_, _, client)| (0..50).map(|_| (client.clone(), request.clone())))
        .map(|(client, request)| tokio::spawn(async move { client.send(request).await }))
        .collect();
    let (mut admitted, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(error) if error.is_budget_exceeded() => refused += 1,
            Err(error) => panic!("{error}"),
        }
    }
    for (redis, _, _) in &replicas {
        tokio::time::timeout(Duration::from_secs(10), redis.flush())
            .await
            .unwrap();
    }
    let (_, budget, client) = &replicas[0];
    let fleet = budget.shared_snapshot().await.unwrap();
    let ledger = client.ledger().shared_snapshot().await.unwrap();
    let settled: Usd = replicas
        .iter()
        .map(|(_, _, client)| client.ledger().total_cost())
        .sum();
    println!(
        "4 clients, 200 requests, a shared {cap} budget: {admitted} sent, {refused} refused; \
         the fleet spent {} (ledger {}, the clients' own ledgers {settled})",
        fleet.spent, ledger.total.cost
    );
    assert_eq!(admitted + refused, 200);
    assert!(refused > 0, "the shared cap binds");
    assert!(fleet.spent <= cap);
    assert_eq!((fleet.spent, ledger.total.cost), (settled, settled));
    assert_eq!(ledger.total.requests, admitted);
    assert_eq!(client.budget().unwrap().cap, cap);
    assert!(
        replicas
            .iter()
            .any(|(_, _, client)| client.rate_limit_status("gpt-4.1").is_some()),
        "the shared limiter reports as of its last decision"
    );

    // Redis gone: the shared limits fail closed, with a typed error.
    server.kill();
    let error = client.send(request).await.unwrap_err();
    assert!(error.is_backend_unavailable(), "{error}");
    assert!(RedisUnavailable::find(&error).is_some());
}
