//! The cost layer: hand-computed costs of every token category on the four models of
//! PRICING.md, exact ledger sums under concurrency (through a `service_fn`, and over real
//! loopback HTTP through `HttpTransport` against chatstack-mock), streams priced like their
//! unary twin, LiteLLM loading, overrides, multipliers, the price comparison, and unknown
//! models.
#![cfg(feature = "cost")]

mod support;

use std::sync::Arc;

use chatstack_middleware::cost::{
    CacheTtl, CostLayer, CostLedger, ModelPrice, PriceSource, PriceTable, Pricing, ResponseCost,
    TokenCounts, UnknownModel, Usd,
};
use chatstack_middleware::{Error, ErrorKind};
use chatstack_proto::{LlmResponse, Usage};
use support::{Answer, Ask};
use tower::{Layer, Service, ServiceExt};

/// An OpenAI-style usage: `prompt` includes `cached` and `write`, `completion` includes
/// `reasoning`.
fn usage(prompt: u64, cached: u64, write: u64, completion: u64, reasoning: u64) -> Usage {
    let mut usage = Usage::new(prompt, completion);
    usage.prompt_tokens_details.cached_tokens = cached;
    usage.prompt_tokens_details.cache_write_tokens = write;
    usage.completion_tokens_details.reasoning_tokens = reasoning;
    usage
}

/// A provider that answers every request with `usage`.
fn answering(
    usage: Usage,
) -> impl Service<Ask, Response = Answer, Error = Error, Future: Send> + Clone + Send {
    tower::service_fn(move |_: Ask| async move {
        Ok::<_, Error>(Answer {
            usage: Some(usage),
            ..Answer::default()
        })
    })
}

/// The cost the layer attached to the response of one call for `model` answered with `usage`.
async fn priced(layer: &CostLayer, model: &str, usage: Usage) -> ResponseCost {
    let answer = layer
        .layer(answering(usage))
        .oneshot(Ask::new(model))
        .await
        .unwrap();
    ResponseCost::of(answer.meta()).expect("a unary response carries its cost")
}

async fn nanos(model: &str, usage: Usage) -> u64 {
    priced(&CostLayer::default(), model, usage)
        .await
        .cost
        .as_nanos()
}

const GPT: &str = "gpt-4.1";
const SONNET: &str = "claude-sonnet-4.5";
const FLASH: &str = "gemini-2.5-flash";
const DEEPSEEK: &str = "deepseek-v3.2";

// ---- hand-computed costs ----
//
// Prices in pico-dollars per token (= $ per million × 10⁶), from PRICING.md:
//   gpt-4.1            input 2,000,000  cached 500,000  output 8,000,000
//   claude-sonnet-4.5  input 3,000,000  cached 300,000  write 3,750,000 (1 h 6,000,000)
//                      output 15,000,000; over 200k: 6,000,000 / 600,000 / 7,500,000
//                      (12,000,000) / 22,500,000
//   gemini-2.5-flash   input 300,000    cached 30,000   output 2,500,000
//   deepseek-v3.2      input 280,000    cached 28,000   output 420,000
// A cost in nano-dollars is tokens × pico-dollars / 1,000.

#[tokio::test]
async fn each_category_alone_on_each_model() {
    // 12,345 tokens of one category at a time.
    let input = usage(12_345, 0, 0, 0, 0);
    let cached = usage(12_345, 12_345, 0, 0, 0);
    let write = usage(12_345, 0, 12_345, 0, 0);
    let output = usage(0, 0, 0, 12_345, 0);
    let reasoning = usage(0, 0, 0, 12_345, 12_345);

    // gpt-4.1: no cache-write price (billed as input); reasoning billed as output.
    assert_eq!(nanos(GPT, input).await, 24_690_000);
    assert_eq!(nanos(GPT, cached).await, 6_172_500);
    assert_eq!(nanos(GPT, write).await, 24_690_000);
    assert_eq!(nanos(GPT, output).await, 98_760_000);
    assert_eq!(nanos(GPT, reasoning).await, 98_760_000);

    assert_eq!(nanos(SONNET, input).await, 37_035_000);
    assert_eq!(nanos(SONNET, cached).await, 3_703_500);
    assert_eq!(nanos(SONNET, write).await, 46_293_750);
    assert_eq!(nanos(SONNET, output).await, 185_175_000);
    assert_eq!(nanos(SONNET, reasoning).await, 185_175_000);

    assert_eq!(nanos(FLASH, input).await, 3_703_500);
    assert_eq!(nanos(FLASH, cached).await, 370_350);
    assert_eq!(nanos(FLASH, write).await, 3_703_500);
    assert_eq!(nanos(FLASH, output).await, 30_862_500);
    assert_eq!(nanos(FLASH, reasoning).await, 30_862_500);

    assert_eq!(nanos(DEEPSEEK, input).await, 3_456_600);
    assert_eq!(nanos(DEEPSEEK, cached).await, 345_660);
    assert_eq!(nanos(DEEPSEEK, write).await, 3_456_600);
    assert_eq!(nanos(DEEPSEEK, output).await, 5_184_900);
    assert_eq!(nanos(DEEPSEEK, reasoning).await, 5_184_900);
}

#[tokio::test]
async fn all_categories_together_on_each_model() {
    // 10,000 prompt tokens: 6,000 cached, 1,000 written, 3,000 input;
    // 2,000 completion tokens: 500 reasoning, 1,500 output.
    let mixed = usage(10_000, 6_000, 1_000, 2_000, 500);
    let cost = priced(&CostLayer::default(), GPT, mixed).await;
    assert_eq!(
        cost.tokens,
        TokenCounts {
            input: 3_000,
            cached_input: 6_000,
            cache_write: 1_000,
            output: 1_500,
            reasoning: 500
        }
    );
    assert_eq!(&*cost.model, "gpt-4.1");
    assert_eq!(cost.source, PriceSource::Table);
    assert!(cost.usage_reported && !cost.long_context);
    // 6.0e9 + 3.0e9 + 2.0e9 + 12.0e9 + 4.0e9 pico-dollars
    assert_eq!(cost.cost, Usd::from_nanos(27_000_000));
    // 9.0e9 + 1.8e9 + 3.75e9 + 22.5e9 + 7.5e9
    assert_eq!(nanos(SONNET, mixed).await, 44_550_000);
    // 0.9e9 + 0.18e9 + 0.3e9 + 3.75e9 + 1.25e9
    assert_eq!(nanos(FLASH, mixed).await, 6_380_000);
    // 0.84e9 + 0.168e9 + 0.28e9 + 0.63e9 + 0.21e9
    assert_eq!(nanos(DEEPSEEK, mixed).await, 2_128_000);
}

#[tokio::test]
async fn claude_over_200k_bills_every_token_at_the_long_context_prices() {
    // 250,000 prompt tokens (100,000 cached, 50,000 written, 100,000 input), 10,000
    // completion tokens (2,000 reasoning): 600e9 + 60e9 + 375e9 + 180e9 + 45e9 pico.
    let long = usage(250_000, 100_000, 50_000, 10_000, 2_000);
    let cost = priced(&CostLayer::default(), SONNET, long).await;
    assert!(cost.long_context);
    assert_eq!(cost.cost, Usd::from_nanos(1_260_000_000));
    // With 1-hour cache writes (12,000,000 each over 200k): 600e9 for the writes.
    let one_hour =
        CostLayer::default().pricing(Pricing::default().cache_write_ttl(CacheTtl::OneHour));
    assert_eq!(
        priced(&one_hour, SONNET, long).await.cost,
        Usd::from_nanos(1_485_000_000)
    );
    // Exactly 200,000 is not over: 600e9 + 1,000 × 15e6.
    assert_eq!(
        nanos(SONNET, usage(200_000, 0, 0, 1_000, 0)).await,
        615_000_000
    );
    // 200,001 is: 200,001 × 6e6 + 1,000 × 22.5e6.
    assert_eq!(
        nanos(SONNET, usage(200_001, 0, 0, 1_000, 0)).await,
        1_222_506_000
    );
    // gpt-4.1 has no tier: 250,000 × 2e6.
    assert_eq!(nanos(GPT, usage(250_000, 0, 0, 0, 0)).await, 500_000_000);
}

#[tokio::test]
async fn a_request_may_choose_its_cache_ttl() {
    // 1,000 written tokens on claude-sonnet-4.5: 5 min 3.75e9 pico, 1 h 6e9 pico.
    let layer = CostLayer::default();
    let service = layer.layer(answering(usage(1_000, 0, 1_000, 0, 0)));
    let mut ask = Ask::new(SONNET);
    let five = service.clone().oneshot(ask.clone()).await.unwrap();
    ask.meta.extensions.insert(CacheTtl::OneHour);
    let hour = service.oneshot(ask).await.unwrap();
    assert_eq!(
        ResponseCost::of(five.meta()).unwrap().cost,
        Usd::from_nanos(3_750_000)
    );
    assert_eq!(
        ResponseCost::of(hour.meta()).unwrap().cost,
        Usd::from_nanos(6_000_000)
    );
}

#[tokio::test]
async fn names_resolve_to_the_same_prices() {
    let mixed = usage(10_000, 6_000, 1_000, 2_000, 500);
    for name in ["gpt-4.1-2025-04-14", "openai/gpt-4.1", "GPT-4.1"] {
        let cost = priced(&CostLayer::default(), name, mixed).await;
        assert_eq!(
            (&*cost.model, cost.cost.as_nanos()),
            ("gpt-4.1", 27_000_000)
        );
    }
    for name in [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "anthropic/claude-sonnet-4.5",
    ] {
        let cost = priced(&CostLayer::default(), name, mixed).await;
        assert_eq!(
            (&*cost.model, cost.cost.as_nanos()),
            ("claude-sonnet-4-5", 44_550_000)
        );
    }
    assert_eq!(nanos("gemini/gemini-2.5-flash", mixed).await, 6_380_000);
    assert_eq!(nanos("deepseek/deepseek-chat", mixed).await, 2_128_000);
}

// ---- multipliers, overrides, LiteLLM, comparison ----

#[tokio::test]
async fn a_relay_multiplier_scales_and_rounds_once() {
    let relay = CostLayer::default().pricing(Pricing::default().multiplier(0.85));
    let mixed = usage(10_000, 6_000, 1_000, 2_000, 500);
    // 27,000,000 × 0.85
    assert_eq!(
        priced(&relay, GPT, mixed).await.cost,
        Usd::from_nanos(22_950_000)
    );
    // One cached deepseek token: 28 nano-dollars × 0.85 = 23.8, rounded to 24.
    assert_eq!(
        priced(&relay, DEEPSEEK, usage(1, 1, 0, 0, 0)).await.cost,
        Usd::from_nanos(24)
    );
}

#[tokio::test]
async fn user_overrides_replace_built_in_prices() {
    let table = PriceTable::builtin()
        .with_price("gpt-4.1", ModelPrice::per_million(1.0, 4.0))
        .with_price(
            "our-model",
            ModelPrice::per_million(0.5, 0.5).max_output_tokens(2_048),
        )
        .with_alias("ours", "our-model");
    let layer = CostLayer::default().pricing(Pricing::new(table));
    let plain = usage(1_000, 0, 0, 1_000, 0);
    // 1,000 × 1e6 + 1,000 × 4e6
    assert_eq!(
        priced(&layer, GPT, plain).await.cost,
        Usd::from_nanos(5_000_000)
    );
    // 2,000 × 0.5e6
    let ours = priced(&layer, "ours", plain).await;
    assert_eq!(
        (&*ours.model, ours.cost),
        ("our-model", Usd::from_nanos(1_000_000))
    );
}

const LITELLM_SAMPLE: &str = r#"{
    "sample_spec": {
        "max_input_tokens": "max input tokens, if the provider specifies it",
        "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "mode": "one of: chat, embedding, completion, image_generation"
    },
    "anthropic/claude-sonnet-4-5-20250929": {
        "litellm_provider": "anthropic", "mode": "chat",
        "max_input_tokens": 200000, "max_output_tokens": 64000, "max_tokens": 64000,
        "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_creation_input_token_cost_above_1hr": 6e-06,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "supports_function_calling": true, "supports_vision": true,
        "tool_use_system_prompt_tokens": 159
    },
    "gemini/gemini-2.5-flash": {
        "litellm_provider": "gemini", "mode": "chat",
        "max_input_tokens": 1048576, "max_output_tokens": 65535,
        "input_cost_per_token": 3e-07, "input_cost_per_audio_token": 1e-06,
        "output_cost_per_token": 2.5e-06, "output_cost_per_reasoning_token": 2.5e-06,
        "cache_read_input_token_cost": 3e-08,
        "supported_modalities": ["text", "image", "audio", "video"]
    },
    "deepseek/deepseek-chat": {
        "litellm_provider": "deepseek", "mode": "chat",
        "max_input_tokens": 131072, "max_output_tokens": 8192,
        "input_cost_per_token": 2.8e-07, "output_cost_per_token": 4.2e-07,
        "cache_read_input_token_cost": 2.8e-08,
        "input_cost_per_token_batches": 1.4e-07
    },
    "openrouter/openai/o3": {
        "litellm_provider": "openrouter", "mode": "chat",
        "input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06,
        "output_cost_per_reasoning_token": 1e-05
    },
    "text-embedding-3-large": {"litellm_provider": "openai", "mode": "embedding", "input_cost_per_token": 1.3e-07, "output_cost_per_token": 0.0},
    "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04},
    "azure/no-prices": {"litellm_provider": "azure", "mode": "chat", "max_tokens": 4096},
    "broken/entry": {"mode": "chat", "input_cost_per_token": "cheap", "output_cost_per_token": 1e-06}
}"#;

#[tokio::test]
async fn litellm_json_loads_with_prefixes_and_long_context_prices() {
    let (table, summary) = PriceTable::from_litellm_json(LITELLM_SAMPLE).unwrap();
    assert_eq!((summary.loaded, summary.skipped), (4, 5));
    // Bare names, dated names and aliases find the prefixed keys.
    assert_eq!(
        table.resolve("claude-sonnet-4-5").unwrap().0,
        "anthropic/claude-sonnet-4-5-20250929"
    );
    assert_eq!(
        table.resolve("claude-sonnet-4-5-20250929").unwrap().0,
        "anthropic/claude-sonnet-4-5-20250929"
    );
    assert_eq!(
        table.resolve("gemini-2.5-flash").unwrap().0,
        "gemini/gemini-2.5-flash"
    );
    assert_eq!(
        table.resolve("deepseek-v3.2").unwrap().0,
        "deepseek/deepseek-chat"
    );
    assert_eq!(table.resolve("o3").unwrap().0, "openrouter/openai/o3");
    assert!(table.resolve("text-embedding-3-large").is_none());
    assert_eq!(
        table
            .resolve("gemini-2.5-flash")
            .unwrap()
            .1
            .max_output_tokens,
        Some(65_535)
    );

    let layer = CostLayer::default().pricing(Pricing::new(table));
    // The same hand-computed figures as with the built-in table.
    let mixed = usage(10_000, 6_000, 1_000, 2_000, 500);
    assert_eq!(
        priced(&layer, SONNET, mixed).await.cost,
        Usd::from_nanos(44_550_000)
    );
    assert_eq!(
        priced(&layer, FLASH, mixed).await.cost,
        Usd::from_nanos(6_380_000)
    );
    assert_eq!(
        priced(&layer, DEEPSEEK, mixed).await.cost,
        Usd::from_nanos(2_128_000)
    );
    // Over 200k: input and output from the file; the cache prices scaled like input
    // (0.6e6 read, 7.5e6 write): 600e9 + 60e9 + 375e9 + 180e9 + 45e9 pico.
    let long = usage(250_000, 100_000, 50_000, 10_000, 2_000);
    let cost = priced(&layer, SONNET, long).await;
    assert!(cost.long_context);
    assert_eq!(cost.cost, Usd::from_nanos(1_260_000_000));
    // o3 through the relay has its own reasoning price: 1,000 output × 8e6 + 1,000
    // reasoning × 10e6.
    assert_eq!(
        priced(&layer, "o3", usage(0, 0, 0, 2_000, 1_000))
            .await
            .cost,
        Usd::from_nanos(18_000_000)
    );
}

#[test]
fn litellm_loads_over_the_built_in_table_and_bad_files_are_typed_errors() {
    let mut table = PriceTable::builtin();
    let before = table.len();
    let summary = table
        .load_litellm_json(r#"{"gpt-4.1": {"mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06}}"#)
        .unwrap();
    assert_eq!(summary.loaded, 1);
    assert_eq!(table.len(), before, "replaced, not added");
    assert_eq!(
        table.get("gpt-4.1").unwrap().input.picos_per_token(),
        1_000_000
    );
    assert_eq!(table.get("gpt-4.1").unwrap().cached_input, None);

    for bad in ["", "{\"a\": ", "[]", "\"prices\"", "42"] {
        let error = table.load_litellm_json(bad).unwrap_err();
        assert!(!error.to_string().is_empty(), "{bad:?}: {error}");
    }
    assert_eq!(table.len(), before, "a failed load changes nothing");
}

#[test]
fn ten_million_output_tokens_a_month() {
    let month = TokenCounts {
        output: 10_000_000,
        ..TokenCounts::default()
    };
    let models = [GPT, SONNET, FLASH, DEEPSEEK];
    let rows = Pricing::default().multiplier(0.85).compare(models, &month);
    let figures: Vec<(&str, &str, u64, u64)> = rows
        .iter()
        .map(|row| {
            (
                row.model.as_str(),
                row.id.as_deref().unwrap(),
                row.list.unwrap().as_nanos(),
                row.billed.unwrap().as_nanos(),
            )
        })
        .collect();
    assert_eq!(
        figures,
        [
            (GPT, "gpt-4.1", 80_000_000_000, 68_000_000_000),
            (
                SONNET,
                "claude-sonnet-4-5",
                150_000_000_000,
                127_500_000_000
            ),
            (FLASH, "gemini-2.5-flash", 25_000_000_000, 21_250_000_000),
            (DEEPSEEK, "deepseek-chat", 4_200_000_000, 3_570_000_000),
        ]
    );
    let shown: Vec<String> = rows
        .iter()
        .map(|row| format!("{:.2} {:.2}", row.list.unwrap(), row.billed.unwrap()))
        .collect();
    assert_eq!(
        shown,
        [
            "$80.00 $68.00",
            "$150.00 $127.50",
            "$25.00 $21.25",
            "$4.20 $3.57"
        ]
    );
    // A month's volume is priced at the base tier even on a tiered model; unknown rows say so.
    let rows = Pricing::default().compare(["claude-sonnet-4-5", "mystery"], &month);
    assert_eq!(rows[0].list, Some(Usd::from_dollars(150)));
    assert_eq!((rows[1].id.as_ref(), rows[1].list), (None, None));
}

// ---- unknown models ----

#[tokio::test]
async fn unknown_model_error_refuses_before_sending_and_counts() {
    let ledger = CostLedger::new();
    let layer = CostLayer::new(ledger.clone())
        .pricing(Pricing::default().unknown_model(UnknownModel::Error));
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let service = layer.layer(tower::service_fn(move |_: Ask| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, Error>(Answer::ok("hi")) }
    }));
    for _ in 0..2 {
        let error = service
            .clone()
            .oneshot(Ask::new("mystery-model"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("`mystery-model`"), "{error}");
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "never sent"
    );
    service.oneshot(Ask::new(GPT)).await.unwrap();
    let snapshot = ledger.snapshot();
    assert_eq!(snapshot.unknown_models["mystery-model"], 2);
    assert_eq!(snapshot.total.requests, 1);
}

#[tokio::test]
async fn unknown_model_zero_counts_it_free() {
    let layer = CostLayer::default(); // the default policy
    let cost = priced(&layer, "mystery-model", usage(1_000, 0, 0, 1_000, 0)).await;
    assert_eq!(cost.source, PriceSource::Unpriced);
    assert_eq!(&*cost.model, "mystery-model");
    assert_eq!(cost.cost, Usd::ZERO);
    assert_eq!(cost.tokens.total(), 2_000, "tokens are still counted");
    priced(&layer, "mystery-model", usage(1, 0, 0, 1, 0)).await;
    priced(&layer, "other-mystery", usage(1, 0, 0, 1, 0)).await;
    let snapshot = layer.ledger().snapshot();
    assert_eq!(snapshot.unknown_models["mystery-model"], 2);
    assert_eq!(snapshot.unknown_models["other-mystery"], 1);
    assert_eq!(snapshot.by_model["mystery-model"].requests, 2);
    assert_eq!(snapshot.by_model["mystery-model"].tokens.output, 1_001);
}

#[tokio::test]
async fn unknown_model_default_price_bills_it() {
    let fallback = ModelPrice::per_million(10.0, 30.0);
    let layer = CostLayer::default()
        .pricing(Pricing::default().unknown_model(UnknownModel::Price(fallback)));
    // 1,000 × 10e6 + 1,000 × 30e6
    let cost = priced(&layer, "mystery-model", usage(1_000, 0, 0, 1_000, 0)).await;
    assert_eq!(
        (cost.source, cost.cost),
        (PriceSource::Default, Usd::from_nanos(40_000_000))
    );
    // A known model is not affected.
    assert_eq!(
        priced(&layer, GPT, usage(1_000, 0, 0, 0, 0)).await.cost,
        Usd::from_nanos(2_000_000)
    );
    let snapshot = layer.ledger().snapshot();
    assert_eq!(snapshot.unknown_models.len(), 1);
    assert_eq!(snapshot.unknown_models["mystery-model"], 1);
}

#[tokio::test]
async fn failures_are_not_recorded_and_missing_usage_is_counted() {
    let layer = CostLayer::default();
    let failing = layer.layer(tower::service_fn(|_: Ask| async {
        Err::<Answer, _>(Error::new(ErrorKind::Server, "down"))
    }));
    failing.oneshot(Ask::new(GPT)).await.unwrap_err();
    let silent = layer.layer(tower::service_fn(|_: Ask| async {
        Ok::<_, Error>(Answer::default())
    }));
    let answer = silent
        .oneshot(Ask::new(GPT).tagged("batch-7"))
        .await
        .unwrap();
    let cost = ResponseCost::of(answer.meta()).unwrap();
    assert!(!cost.usage_reported);
    assert_eq!(cost.cost, Usd::ZERO);
    let snapshot = layer.ledger().snapshot();
    assert_eq!(
        (snapshot.total.requests, snapshot.total.without_usage),
        (1, 1)
    );
    assert_eq!(snapshot.by_tag["batch-7"].without_usage, 1);
}

trait Tagged {
    fn tagged(self, tag: &str) -> Self;
}

impl Tagged for Ask {
    fn tagged(mut self, tag: &str) -> Self {
        self.meta.tag = Some(tag.to_owned());
        self
    }
}

// ---- concurrency: exact sums ----

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_thousand_concurrent_requests_add_up_exactly() {
    let ledger = CostLedger::new();
    let layer = CostLayer::new(ledger.clone());
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = layer.layer(tower::service_fn(move |_: Ask| {
        let call = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            // Interleave the requests.
            for _ in 0..call % 4 {
                tokio::task::yield_now().await;
            }
            Ok::<_, Error>(Answer {
                usage: Some(usage(10_000, 6_000, 1_000, 2_000, 500)),
                ..Answer::default()
            })
        }
    }));
    let models = [GPT, SONNET, FLASH, DEEPSEEK];
    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let service = service.clone();
            let ask = Ask::new(models[i % 4]).tagged(["team-0", "team-1"][i % 2]);
            tokio::spawn(async move { service.oneshot(ask).await.unwrap() })
        })
        .collect();
    let mut summed = Usd::ZERO;
    for task in tasks {
        summed += ResponseCost::of(task.await.unwrap().meta()).unwrap().cost;
    }
    let snapshot = ledger.snapshot();
    // 250 × 27,000,000 + 250 × 44,550,000 + 250 × 6,380,000 + 250 × 2,128,000
    assert_eq!(snapshot.total.cost, Usd::from_nanos(20_014_500_000));
    assert_eq!(summed, snapshot.total.cost);
    assert_eq!(ledger.total_cost(), snapshot.total.cost);
    assert_eq!(snapshot.total.requests, 1_000);
    assert_eq!(
        snapshot.total.tokens,
        TokenCounts {
            input: 3_000_000,
            cached_input: 6_000_000,
            cache_write: 1_000_000,
            output: 1_500_000,
            reasoning: 500_000
        }
    );
    let by_model: Vec<(&str, u64, u64)> = snapshot
        .by_model
        .iter()
        .map(|(model, entry)| (model.as_str(), entry.requests, entry.cost.as_nanos()))
        .collect();
    assert_eq!(
        by_model,
        [
            ("claude-sonnet-4-5", 250, 11_137_500_000),
            ("deepseek-chat", 250, 532_000_000),
            ("gemini-2.5-flash", 250, 1_595_000_000),
            ("gpt-4.1", 250, 6_750_000_000),
        ]
    );
    // team-0 had gpt-4.1 and gemini-2.5-flash; team-1 the other two.
    assert_eq!(
        snapshot.by_tag["team-0"].cost,
        Usd::from_nanos(8_345_000_000)
    );
    assert_eq!(
        snapshot.by_tag["team-1"].cost,
        Usd::from_nanos(11_669_500_000)
    );
    assert_eq!(snapshot.by_tag["team-1"].requests, 500);
    assert!(snapshot.unknown_models.is_empty());
}

// ---- over real loopback HTTP ----

mod http_tests {
    use std::sync::Mutex;

    use super::*;
    use chatstack_middleware::cost::StreamCost;
    use chatstack_middleware::{ChatRequest, ChatStream, Message, StreamRequest};
    use chatstack_mock::{MockConfig, MockServer};
    use chatstack_proto::StreamOptions;
    use chatstack_transport::HttpTransport;
    use futures_util::StreamExt;

    const MIXED_USAGE: &str = r#"{"prompt_tokens":10000,"cached_tokens":6000,"cache_write_tokens":1000,"completion_tokens":2000,"reasoning_tokens":500}"#;

    fn transport(mock: &MockServer) -> HttpTransport {
        HttpTransport::builder()
            .base_url(mock.url())
            .build()
            .unwrap()
    }

    fn request(model: &str, usage: Option<&str>) -> ChatRequest {
        let mut request = ChatRequest::new(model, [Message::user("What does a token cost?")]);
        if let Some(usage) = usage {
            request
                .meta
                .headers
                .insert("x-mock-usage", usage.parse().unwrap());
        }
        request
    }

    /// Reads a stream to its end.
    async fn drain(mut stream: ChatStream) -> ChatStream {
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
        }
        stream
    }

    #[tokio::test]
    async fn a_stream_costs_what_the_same_unary_response_costs() {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let transport = transport(&mock);
        // Records what the stream requests carried on the wire.
        let sent: Arc<Mutex<Vec<Option<StreamOptions>>>> = Arc::default();
        let recording = {
            let sent = Arc::clone(&sent);
            let transport = transport.clone();
            tower::service_fn(move |request: StreamRequest| {
                sent.lock().unwrap().push(request.stream_options.clone());
                let transport = transport.clone();
                async move { transport.stream(request).await }
            })
        };
        let layer = CostLayer::default();
        let unary = layer.layer(transport);
        let streaming = layer.layer(recording);

        let expected = [
            (GPT, 27_000_000),
            (SONNET, 44_550_000),
            (FLASH, 6_380_000),
            (DEEPSEEK, 2_128_000),
        ];
        for (model, nanos) in expected {
            let response = unary
                .clone()
                .oneshot(request(model, Some(MIXED_USAGE)))
                .await
                .unwrap();
            let unary_cost = ResponseCost::of(&response.meta).unwrap();
            assert_eq!(unary_cost.cost, Usd::from_nanos(nanos), "{model} unary");

            let stream = streaming
                .clone()
                .oneshot(StreamRequest::from(request(model, Some(MIXED_USAGE))))
                .await
                .unwrap();
            let handle = stream
                .meta()
                .extensions
                .get::<StreamCost>()
                .unwrap()
                .clone();
            assert!(handle.get().is_none(), "known only at the end");
            let stream = drain(stream).await;
            assert_eq!(handle.get(), Some(&unary_cost), "{model} stream");
            assert_eq!(ResponseCost::of(stream.meta()).as_ref(), Some(&unary_cost));
        }
        // Without a usage header the mock reports its own counts: the same either way, and
        // through `collect_response` too.
        let response = unary.oneshot(request(GPT, None)).await.unwrap();
        let collected = streaming
            .clone()
            .oneshot(StreamRequest::from(request(GPT, None)))
            .await
            .unwrap()
            .collect_response()
            .await
            .unwrap();
        assert_eq!(collected.usage, response.usage);
        assert_eq!(
            ResponseCost::of(&collected.meta),
            ResponseCost::of(&response.meta)
        );
        assert!(ResponseCost::of(&collected.meta).unwrap().cost > Usd::ZERO);

        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 5);
        for options in sent.iter() {
            assert_eq!(options.as_ref().and_then(|o| o.include_usage), Some(true));
        }
        let snapshot = layer.ledger().snapshot();
        assert_eq!(snapshot.total.requests, 10);
        assert_eq!(snapshot.total.without_usage, 0);
    }

    #[tokio::test]
    async fn without_include_usage_a_stream_is_recorded_without_cost() {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let layer = CostLayer::default().request_stream_usage(false);
        let stream = layer
            .layer(transport(&mock))
            .oneshot(StreamRequest::from(request(GPT, Some(MIXED_USAGE))))
            .await
            .unwrap();
        let stream = drain(stream).await;
        let cost = ResponseCost::of(stream.meta()).unwrap();
        assert!(!cost.usage_reported);
        assert_eq!(cost.cost, Usd::ZERO);
        assert_eq!(layer.ledger().snapshot().total.without_usage, 1);
    }

    #[tokio::test]
    async fn a_dropped_stream_is_recorded_without_usage() {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let layer = CostLayer::default();
        let mut stream = layer
            .layer(transport(&mock))
            .oneshot(StreamRequest::from(request(GPT, Some(MIXED_USAGE))))
            .await
            .unwrap();
        stream.next().await.unwrap().unwrap();
        let handle = stream
            .meta()
            .extensions
            .get::<StreamCost>()
            .unwrap()
            .clone();
        drop(stream);
        assert!(!handle.get().unwrap().usage_reported);
        assert_eq!(layer.ledger().snapshot().total.without_usage, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hundreds_of_requests_over_the_wire_add_up_exactly() {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let ledger = CostLedger::new();
        let service = CostLayer::new(ledger.clone()).layer(transport(&mock));
        let models = [GPT, SONNET, FLASH, DEEPSEEK];
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let service = service.clone();
                let request =
                    request(models[i % 4], Some(MIXED_USAGE)).tag(format!("job-{}", i % 3));
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        let response = service.oneshot(request).await.unwrap();
                        ResponseCost::of(&response.meta).unwrap().cost
                    } else {
                        let stream = service.oneshot(StreamRequest::from(request)).await.unwrap();
                        ResponseCost::of(drain(stream).await.meta()).unwrap().cost
                    }
                })
            })
            .collect();
        let mut summed = Usd::ZERO;
        for task in tasks {
            summed += task.await.unwrap();
        }
        let snapshot = ledger.snapshot();
        // 75 × (27,000,000 + 44,550,000 + 6,380,000 + 2,128,000)
        assert_eq!(snapshot.total.cost, Usd::from_nanos(6_004_350_000));
        assert_eq!(summed, snapshot.total.cost);
        assert_eq!(
            (snapshot.total.requests, snapshot.total.without_usage),
            (300, 0)
        );
        assert_eq!(
            snapshot.by_model["gpt-4.1"].cost,
            Usd::from_nanos(2_025_000_000)
        );
        assert_eq!(
            snapshot.by_model["claude-sonnet-4-5"].cost,
            Usd::from_nanos(3_341_250_000)
        );
        assert_eq!(
            snapshot.by_model["gemini-2.5-flash"].cost,
            Usd::from_nanos(478_500_000)
        );
        assert_eq!(
            snapshot.by_model["deepseek-chat"].cost,
            Usd::from_nanos(159_600_000)
        );
        let tags: u64 = snapshot.by_tag.values().map(|entry| entry.requests).sum();
        assert_eq!((snapshot.by_tag.len(), tags), (3, 300));
        assert_eq!(mock.counters().snapshot().status(200), 300);
    }
}

/// Found by the `price_loader` fuzz target: absurd prices (a price file is user input) and
/// absurd counts (usage is server input) used to overflow the sum of the categories.
#[test]
fn absurd_prices_and_counts_saturate_instead_of_overflowing() {
    let mut table = PriceTable::new();
    table
        .load_litellm_json(r#"{"m": {"input_cost_per_token": 1e8, "output_cost_per_token": 1e8}}"#)
        .unwrap();
    let pricing = Pricing::new(table);
    let mut huge = usage(u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX);
    huge.total_tokens = u64::MAX;
    let cost = pricing.price("m", Some(&huge)).unwrap();
    assert_eq!(cost.cost, Usd::MAX);
    // A price past u64 pico-dollars ($18.4M a token) saturates as it is read, and a sane
    // usage on that table prices at the saturated rate.
    let one = pricing.price("m", Some(&usage(1, 0, 0, 0, 0))).unwrap();
    assert_eq!(one.cost, Usd::from_nanos(u64::MAX.div_ceil(1000)));
}
