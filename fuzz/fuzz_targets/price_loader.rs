//! Fuzzes the LiteLLM price-file loader of `chatstack-middleware`'s cost module, and prices
//! usages with whatever table it accepts.
//!
//! The input is the text of a `model_prices_and_context_window.json` (invalid UTF-8 is
//! replaced, the loader takes a `&str`). It is loaded with
//! [`PriceTable::from_litellm_json`] and, on top of the built-in prices, with
//! [`PriceTable::load_litellm_json`].
//!
//! It checks that:
//! - loading never panics, and a file is refused only when it is not JSON or not a JSON
//!   object; `loaded + skipped` is the number of entries, and the table has at most
//!   `loaded` ids (ids are trimmed and lowercased, so two keys may share one);
//! - every id of an accepted table resolves to itself, and looking up the file's raw keys
//!   (any case, any prefix) does not panic;
//! - every price of an accepted table prices token counts from zero to `u64::MAX` in every
//!   category, at both cache TTLs, through [`ModelPrice::cost`], [`Pricing::price`] (with
//!   usages as a hostile server may report them, at several multipliers) and
//!   [`Pricing::compare`], without an overflow panic (overflow checks are on in this
//!   build), and a cost never goes down when the output grows;
//! - a [`BudgetLayer`] priced with the table computes the worst case of a request (from the
//!   request's cap or the table's `max_output_tokens`) without an overflow panic.
#![no_main]

use chatstack_middleware::budget::BudgetLayer;
use chatstack_middleware::cost::{
    CacheTtl, LoadPricesError, ModelPrice, PriceTable, Pricing, TokenCounts, UnknownModel, Usd,
};
use chatstack_proto::{ChatRequest, ChatResponse, Error, Message, Usage};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service};

const BIG: [u64; 5] = [0, 1, 200_001, u64::MAX / 2, u64::MAX];

/// Token counts with each category at each of `BIG`, alone, plus all at once.
fn workloads() -> Vec<TokenCounts> {
    let mut all = Vec::new();
    for &n in &BIG {
        let one = |set: fn(&mut TokenCounts, u64)| {
            let mut tokens = TokenCounts::default();
            set(&mut tokens, n);
            tokens
        };
        all.push(one(|t, n| t.input = n));
        all.push(one(|t, n| t.cached_input = n));
        all.push(one(|t, n| t.cache_write = n));
        all.push(one(|t, n| t.output = n));
        all.push(one(|t, n| t.reasoning = n));
        all.push(TokenCounts {
            input: n,
            cached_input: n,
            cache_write: n,
            output: n,
            reasoning: n,
        });
    }
    all
}

/// Usages a hostile or broken server may report: huge totals, details above their totals.
/// (Built field by field: `Usage::new` adds its two counts unchecked.)
fn usages() -> Vec<Usage> {
    let usage = |prompt: u64, completion: u64| Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        ..Usage::default()
    };
    let mut all = Vec::new();
    for &n in &BIG {
        all.push(usage(n, n));
        let mut details = usage(n, n);
        details.prompt_tokens_details.cached_tokens = n;
        details.completion_tokens_details.reasoning_tokens = n / 2;
        all.push(details);
        let mut over = usage(n, u64::MAX);
        over.prompt_tokens_details.cache_write_tokens = u64::MAX;
        all.push(over);
    }
    all
}

/// Prices every workload; the cost never goes down when the output grows (the tier
/// depends on the prompt alone).
fn check_price(id: &str, price: &ModelPrice) {
    let _ = (price.input.to_string(), price.output.to_string());
    let _ = format!("{price:?}");
    for ttl in [CacheTtl::FiveMinutes, CacheTtl::OneHour] {
        for tokens in workloads() {
            let cost = price.cost(&tokens, ttl);
            let _ = (cost.to_string(), format!("{cost:.2}"));
            let mut more = tokens;
            more.output = more.output.saturating_add(1_000);
            assert!(
                price.cost(&more, ttl) >= cost,
                "{id}: more output cost less"
            );
        }
    }
}

fn check_pricing(table: &PriceTable) {
    let ids: Vec<String> = table.iter().map(|(id, _)| id.to_owned()).collect();
    for multiplier in [0.0, 0.85, 1.0, 1000.0] {
        let pricing = Pricing::new(table.clone())
            .multiplier(multiplier)
            .unknown_model(UnknownModel::Price(ModelPrice::per_million(1.0, 1.0)));
        for id in ids.iter().take(8) {
            for usage in usages() {
                let cost = pricing
                    .price(id, Some(&usage))
                    .expect("a known model is priced");
                assert_eq!(&*cost.model, id.as_str());
                let _ = cost.cost.to_string();
            }
            let _ = pricing.price(id, None).expect("priced without usage");
        }
        for tokens in workloads() {
            let rows = pricing.compare(ids.iter().take(8), &tokens);
            for row in rows {
                assert!(row.list.is_some(), "{} is in the table", row.model);
                if multiplier <= 1.0 {
                    assert!(row.billed <= row.list, "a discount never costs more");
                }
            }
        }
    }
}

/// A budget priced with `table` reserves the worst case of a request for each model.
fn check_budget(table: &PriceTable) {
    let layer = BudgetLayer::new(Usd::MAX).pricing(Pricing::new(table.clone()));
    let mut service = layer.layer(tower::service_fn(|_: ChatRequest| async {
        Ok::<_, Error>(ChatResponse::default())
    }));
    for (id, _) in table.iter().take(8) {
        let prompt = Message::user("a prompt of a few tokens, to be estimated");
        for cap in [None, Some(1), Some(u32::MAX)] {
            let mut request = ChatRequest::new(id, [prompt.clone()]);
            if let Some(cap) = cap {
                request = request.max_completion_tokens(cap).n(u32::MAX);
            }
            // The worst case is computed in `call`; the future is dropped unpolled, which
            // releases the reservation.
            drop(service.call(request));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (table, summary) = match PriceTable::from_litellm_json(&text) {
        Ok(loaded) => loaded,
        Err(error) => {
            let _ = error.to_string();
            match error {
                LoadPricesError::Json(_) => {
                    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err())
                }
                LoadPricesError::NotAnObject => {
                    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert!(!value.is_object());
                }
                other => panic!("unexpected error {other:?}"),
            }
            return;
        }
    };
    let entries: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).expect("an accepted file is a JSON object");
    assert_eq!(summary.loaded + summary.skipped, entries.len());
    assert!(table.len() <= summary.loaded);

    for (id, price) in table.iter() {
        let (resolved, same) = table.resolve(id).expect("an id resolves");
        assert_eq!(resolved, id);
        assert_eq!(same, price);
        check_price(id, price);
    }
    for key in entries.keys().take(16) {
        let _ = table.resolve(key);
        let _ = table.resolve(&key.to_uppercase());
        let _ = table.resolve(&format!("openrouter/{key}-2025-04-14"));
    }
    check_pricing(&table);
    check_budget(&table);

    // Loading over the built-in prices replaces theirs; it reads the file alike.
    let mut builtin = PriceTable::builtin();
    let again = builtin
        .load_litellm_json(&text)
        .expect("the same file loads again");
    assert_eq!(again, summary);
    for (id, price) in table.iter() {
        assert_eq!(builtin.get(id), Some(price));
    }
});
