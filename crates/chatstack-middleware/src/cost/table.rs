//! [`PriceTable`]: prices by model id, the built-in list prices, and model-name resolution.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::price::ModelPrice;

/// Prices by model id, with the rules that find a model's price under the many names it
/// goes by.
///
/// [`PriceTable::default`] (= [`builtin`](Self::builtin)) holds the list prices of common
/// models (see below); [`new`](Self::new) an empty table. Either can be extended with
/// LiteLLM's `model_prices_and_context_window.json`
/// ([`load_litellm_json`](Self::load_litellm_json)) and with the user's own prices
/// ([`insert`](Self::insert), [`with_price`](Self::with_price)), which replace the entry of
/// the same id.
///
/// # Resolution
///
/// Ids are kept lowercase. [`resolve`](Self::resolve) looks a name up as follows, taking the
/// first hit:
///
/// 1. the name as given, then without each leading provider segment in turn
///    (`openrouter/anthropic/claude-sonnet-4.5` → `anthropic/claude-sonnet-4.5` →
///    `claude-sonnet-4.5`); each of these
///    - as an id; as the short name of an id, without its provider prefix or snapshot
///      date (`gemini-2.5-flash` finds `gemini/gemini-2.5-flash`, and `claude-sonnet-4-5`
///      finds `anthropic/claude-sonnet-4-5-20250929`, when only those were loaded; when
///      several ids share a short name, the first one inserted wins); then as an
///      [alias](Self::insert_alias) of either (`deepseek-v3.2` is served as
///      `deepseek-chat`),
///    - and the same without a snapshot date: `-2025-04-14` (OpenAI), `-20250929`
///      (Anthropic), `@20250929` (Vertex AI) or a `-001` version (Gemini);
/// 2. the same, lowercased, and then with dots between digits made dashes
///    (`Claude-Sonnet-4.5` → `claude-sonnet-4-5`).
///
/// The first step does not allocate; the second only runs for a name the first missed.
///
/// # Built-in prices
///
/// US dollars per million tokens, standard (not batch) tier, as the providers publish them:
///
/// | model | input | cached input | cache write (5 min / 1 h) | output | max output |
/// |---|---|---|---|---|---|
/// | gpt-4.1 | 2.00 | 0.50 | — | 8.00 | 32,768 |
/// | gpt-4.1-mini | 0.40 | 0.10 | — | 1.60 | 32,768 |
/// | gpt-4.1-nano | 0.10 | 0.025 | — | 0.40 | 32,768 |
/// | gpt-4o | 2.50 | 1.25 | — | 10.00 | 16,384 |
/// | gpt-4o-2024-05-13 | 5.00 | — | — | 15.00 | 4,096 |
/// | gpt-4o-mini | 0.15 | 0.075 | — | 0.60 | 16,384 |
/// | gpt-5 | 1.25 | 0.125 | — | 10.00 | 128,000 |
/// | gpt-5-mini | 0.25 | 0.025 | — | 2.00 | 128,000 |
/// | gpt-5-nano | 0.05 | 0.005 | — | 0.40 | 128,000 |
/// | o3 | 2.00 | 0.50 | — | 8.00 | 100,000 |
/// | o3-mini | 1.10 | 0.55 | — | 4.40 | 100,000 |
/// | o4-mini | 1.10 | 0.275 | — | 4.40 | 100,000 |
/// | claude-sonnet-4-5 ¹ | 3.00 | 0.30 | 3.75 / 6.00 | 15.00 | 64,000 |
/// | claude-sonnet-4 ¹ | 3.00 | 0.30 | 3.75 / 6.00 | 15.00 | 64,000 |
/// | claude-opus-4-5 | 5.00 | 0.50 | 6.25 / 10.00 | 25.00 | 64,000 |
/// | claude-opus-4-1, claude-opus-4 | 15.00 | 1.50 | 18.75 / 30.00 | 75.00 | 32,000 |
/// | claude-haiku-4-5 | 1.00 | 0.10 | 1.25 / 2.00 | 5.00 | 64,000 |
/// | gemini-2.5-pro ² | 1.25 | 0.125 | — | 10.00 | 65,536 |
/// | gemini-2.5-flash | 0.30 | 0.03 | — | 2.50 | 65,535 |
/// | gemini-2.5-flash-lite | 0.10 | 0.01 | — | 0.40 | 65,536 |
/// | gemini-2.0-flash | 0.10 | 0.025 | — | 0.40 | 8,192 |
/// | deepseek-chat (DeepSeek-V3.2) | 0.28 | 0.028 | — | 0.42 | 8,192 |
/// | deepseek-reasoner (DeepSeek-V3.2, thinking) | 0.28 | 0.028 | — | 0.42 | 65,536 |
///
/// ¹ Prompts over 200k tokens: input 6.00, cached 0.60, cache write 7.50 / 12.00, output
/// 22.50. ² Prompts over 200k tokens: input 2.50, cached 0.25, output 15.00.
/// Reasoning tokens are billed as output. Built-in aliases: `claude-sonnet-4.5` →
/// `claude-sonnet-4-5`, `deepseek-v3.2` and `deepseek-v3.2-exp` → `deepseek-chat`. Dated
/// snapshots (`gpt-4.1-2025-04-14`, `claude-sonnet-4-5-20250929`) resolve to these ids.
/// Prices change: load LiteLLM's file or override where it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    prices: HashMap<Arc<str>, ModelPrice>,
    aliases: HashMap<Arc<str>, Arc<str>>,
    /// The short names of an id → that id: without its provider prefix
    /// (`gemini-2.5-flash` for `gemini/gemini-2.5-flash`), and without its snapshot date
    /// (`claude-sonnet-4-5` for `anthropic/claude-sonnet-4-5-20250929`).
    short: HashMap<Arc<str>, Arc<str>>,
}

impl Default for PriceTable {
    /// The built-in prices: see [`builtin`](Self::builtin).
    fn default() -> Self {
        Self::builtin()
    }
}

impl PriceTable {
    /// A table with no prices, and the built-in aliases (which are names, not prices).
    pub fn new() -> Self {
        let mut table = Self {
            prices: HashMap::new(),
            aliases: HashMap::new(),
            short: HashMap::new(),
        };
        for (alias, id) in BUILTIN_ALIASES {
            table.insert_alias(alias, id);
        }
        table
    }

    /// The built-in list prices (the table in the [type docs](Self)) and aliases.
    pub fn builtin() -> Self {
        builtin_table().as_ref().clone()
    }

    /// Sets the price of `model` (kept lowercase), replacing any price it had; returns the
    /// old one.
    pub fn insert(&mut self, model: &str, price: ModelPrice) -> Option<ModelPrice> {
        let id: Arc<str> = Arc::from(model.trim().to_ascii_lowercase());
        let bare = id.rsplit_once('/').map_or(&*id, |(_, bare)| bare);
        let short_names = [Some(bare), strip_snapshot(bare)];
        for short in short_names.into_iter().flatten() {
            if !short.is_empty() && short != &*id && !self.short.contains_key(short) {
                self.short.insert(Arc::from(short), Arc::clone(&id));
            }
        }
        self.prices.insert(id, price)
    }

    /// Makes `alias` resolve to the price of `model` (both kept lowercase). An alias whose
    /// model has no price resolves to nothing.
    pub fn insert_alias(&mut self, alias: &str, model: &str) {
        self.aliases.insert(
            Arc::from(alias.trim().to_ascii_lowercase()),
            Arc::from(model.trim().to_ascii_lowercase()),
        );
    }

    /// [`insert`](Self::insert), as a builder.
    pub fn with_price(mut self, model: &str, price: ModelPrice) -> Self {
        self.insert(model, price);
        self
    }

    /// [`insert_alias`](Self::insert_alias), as a builder.
    pub fn with_alias(mut self, alias: &str, model: &str) -> Self {
        self.insert_alias(alias, model);
        self
    }

    /// Removes the price of the id `model` (exactly, no resolution); returns it.
    pub fn remove(&mut self, model: &str) -> Option<ModelPrice> {
        let removed = self.prices.remove(model)?;
        self.short.retain(|_, id| &**id != model);
        Some(removed)
    }

    /// The price of the id `model`, exactly (no resolution).
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.prices.get(model)
    }

    /// Finds the price of `model` under any of its names (see the [type docs](Self));
    /// returns the id it was found under, and the price.
    ///
    /// ```
    /// use chatstack_middleware::cost::PriceTable;
    ///
    /// let table = PriceTable::builtin();
    /// for name in ["gpt-4.1-2025-04-14", "openai/gpt-4.1", "GPT-4.1"] {
    ///     assert_eq!(table.resolve(name).unwrap().0, "gpt-4.1");
    /// }
    /// assert_eq!(table.resolve("deepseek/deepseek-v3.2").unwrap().0, "deepseek-chat");
    /// assert_eq!(table.resolve("claude-sonnet-4-5@20250929").unwrap().0, "claude-sonnet-4-5");
    /// assert_eq!(table.resolve("anthropic/claude-sonnet-4.5").unwrap().0, "claude-sonnet-4-5");
    /// assert!(table.resolve("my-finetune").is_none());
    /// ```
    pub fn resolve(&self, model: &str) -> Option<(&str, &ModelPrice)> {
        self.resolve_entry(model).map(|(id, price)| (&**id, price))
    }

    /// [`resolve`](Self::resolve), with the id as the table's own `Arc`.
    pub(crate) fn resolve_entry(&self, model: &str) -> Option<(&Arc<str>, &ModelPrice)> {
        let model = model.trim();
        if let Some(hit) = self.resolve_as_given(model) {
            return Some(hit);
        }
        let lower = model.to_ascii_lowercase();
        if lower != model {
            if let Some(hit) = self.resolve_as_given(&lower) {
                return Some(hit);
            }
        }
        let dashed = dots_between_digits_to_dashes(&lower);
        if dashed != lower {
            return self.resolve_as_given(&dashed);
        }
        None
    }

    /// The ids of the table, in no particular order, with their prices.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        self.prices.iter().map(|(id, price)| (&**id, price))
    }

    /// How many ids have a price.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// Whether no id has a price.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// Step 1 of resolution: the name and its suffixes after each `/`, each as given and
    /// without a snapshot date.
    fn resolve_as_given(&self, model: &str) -> Option<(&Arc<str>, &ModelPrice)> {
        let mut candidate = model;
        loop {
            if let Some(hit) = self.lookup(candidate) {
                return Some(hit);
            }
            if let Some(hit) = strip_snapshot(candidate).and_then(|bare| self.lookup(bare)) {
                return Some(hit);
            }
            candidate = candidate.split_once('/')?.1;
        }
    }

    /// One name: as an id or the short name of one, else as an alias of one.
    fn lookup(&self, name: &str) -> Option<(&Arc<str>, &ModelPrice)> {
        self.find_id(name)
            .or_else(|| self.find_id(self.aliases.get(name)?))
    }

    /// One name, as an id or the short name of one.
    fn find_id(&self, name: &str) -> Option<(&Arc<str>, &ModelPrice)> {
        if let Some(hit) = self.prices.get_key_value(name) {
            return Some(hit);
        }
        self.prices.get_key_value(&**self.short.get(name)?)
    }
}

/// `name` without a trailing snapshot date or version, if it has one: `-YYYY-MM-DD`,
/// `-YYYYMMDD`, `@YYYYMMDD`, or `-NNN`.
fn strip_snapshot(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    let len = bytes.len();
    // -2025-04-14
    if len > 11
        && bytes[len - 11] == b'-'
        && digits(len - 10..len - 6)
        && bytes[len - 6] == b'-'
        && digits(len - 5..len - 3)
        && bytes[len - 3] == b'-'
        && digits(len - 2..len)
    {
        return Some(&name[..len - 11]);
    }
    // -20250929 or @20250929
    if len > 9 && matches!(bytes[len - 9], b'-' | b'@') && digits(len - 8..len) {
        return Some(&name[..len - 9]);
    }
    // -001
    if len > 4 && bytes[len - 4] == b'-' && digits(len - 3..len) {
        return Some(&name[..len - 4]);
    }
    None
}

/// `claude-sonnet-4.5` → `claude-sonnet-4-5`: dots between two digits become dashes.
fn dots_between_digits_to_dashes(name: &str) -> String {
    let bytes = name.as_bytes();
    name.char_indices()
        .map(|(i, c)| {
            let between_digits = c == '.'
                && i > 0
                && bytes[i - 1].is_ascii_digit()
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if between_digits { '-' } else { c }
        })
        .collect()
}

const BUILTIN_ALIASES: [(&str, &str); 3] = [
    ("claude-sonnet-4.5", "claude-sonnet-4-5"),
    ("deepseek-v3.2", "deepseek-chat"),
    ("deepseek-v3.2-exp", "deepseek-chat"),
];

/// The built-in table, made once.
pub(crate) fn builtin_table() -> &'static Arc<PriceTable> {
    static TABLE: OnceLock<Arc<PriceTable>> = OnceLock::new();
    TABLE.get_or_init(|| Arc::new(make_builtin()))
}

fn make_builtin() -> PriceTable {
    let openai = |input, cached, output, max_in, max_out| {
        ModelPrice::per_million(input, output)
            .cached_input(cached)
            .max_input_tokens(max_in)
            .max_output_tokens(max_out)
    };
    let claude = |input: f64, output: f64, max_out| {
        // Anthropic's multipliers: cache read 0.1×, 5-minute write 1.25×, 1-hour write 2×.
        ModelPrice::per_million(input, output)
            .cached_input(input / 10.0)
            .cache_write(input * 1.25)
            .cache_write_1h(input * 2.0)
            .max_input_tokens(200_000)
            .max_output_tokens(max_out)
    };
    let sonnet = claude(3.0, 15.0, 64_000)
        .above_200k(6.0, 22.5)
        .above_200k_cached_input(0.6)
        .above_200k_cache_write(7.5, 12.0);
    let gemini = |input, cached, output, max_out| {
        ModelPrice::per_million(input, output)
            .cached_input(cached)
            .max_input_tokens(1_048_576)
            .max_output_tokens(max_out)
    };
    let deepseek = |max_out| {
        ModelPrice::per_million(0.28, 0.42)
            .cached_input(0.028)
            .max_input_tokens(131_072)
            .max_output_tokens(max_out)
    };
    let entries = [
        ("gpt-4.1", openai(2.0, 0.5, 8.0, 1_047_576, 32_768)),
        ("gpt-4.1-mini", openai(0.4, 0.1, 1.6, 1_047_576, 32_768)),
        ("gpt-4.1-nano", openai(0.1, 0.025, 0.4, 1_047_576, 32_768)),
        ("gpt-4o", openai(2.5, 1.25, 10.0, 128_000, 16_384)),
        // The first gpt-4o snapshot kept its launch price; without this entry its dated
        // name would resolve to gpt-4o.
        (
            "gpt-4o-2024-05-13",
            ModelPrice::per_million(5.0, 15.0)
                .max_input_tokens(128_000)
                .max_output_tokens(4_096),
        ),
        ("gpt-4o-mini", openai(0.15, 0.075, 0.6, 128_000, 16_384)),
        ("gpt-5", openai(1.25, 0.125, 10.0, 272_000, 128_000)),
        ("gpt-5-mini", openai(0.25, 0.025, 2.0, 272_000, 128_000)),
        ("gpt-5-nano", openai(0.05, 0.005, 0.4, 272_000, 128_000)),
        ("o3", openai(2.0, 0.5, 8.0, 200_000, 100_000)),
        ("o3-mini", openai(1.1, 0.55, 4.4, 200_000, 100_000)),
        ("o4-mini", openai(1.1, 0.275, 4.4, 200_000, 100_000)),
        ("claude-sonnet-4-5", sonnet),
        ("claude-sonnet-4", sonnet),
        ("claude-opus-4-5", claude(5.0, 25.0, 64_000)),
        ("claude-opus-4-1", claude(15.0, 75.0, 32_000)),
        ("claude-opus-4", claude(15.0, 75.0, 32_000)),
        ("claude-haiku-4-5", claude(1.0, 5.0, 64_000)),
        (
            "gemini-2.5-pro",
            gemini(1.25, 0.125, 10.0, 65_536)
                .above_200k(2.5, 15.0)
                .above_200k_cached_input(0.25),
        ),
        ("gemini-2.5-flash", gemini(0.3, 0.03, 2.5, 65_535)),
        ("gemini-2.5-flash-lite", gemini(0.1, 0.01, 0.4, 65_536)),
        ("gemini-2.0-flash", gemini(0.1, 0.025, 0.4, 8_192)),
        ("deepseek-chat", deepseek(8_192)),
        ("deepseek-reasoner", deepseek(65_536)),
    ];
    let mut table = PriceTable::new();
    for (id, price) in entries {
        table.insert(id, price);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::TokenPrice;

    #[test]
    fn pricing_md_prices_are_exact() {
        let table = PriceTable::builtin();
        let picos = |price: Option<TokenPrice>| price.map(TokenPrice::picos_per_token);
        let gpt = table.get("gpt-4.1").unwrap();
        assert_eq!(gpt.input.picos_per_token(), 2_000_000);
        assert_eq!(picos(gpt.cached_input), Some(500_000));
        assert_eq!(gpt.output.picos_per_token(), 8_000_000);
        assert_eq!(
            (gpt.max_input_tokens, gpt.max_output_tokens),
            (Some(1_047_576), Some(32_768))
        );

        let sonnet = table.get("claude-sonnet-4-5").unwrap();
        assert_eq!(sonnet.input.picos_per_token(), 3_000_000);
        assert_eq!(picos(sonnet.cached_input), Some(300_000));
        assert_eq!(picos(sonnet.cache_write), Some(3_750_000));
        assert_eq!(picos(sonnet.cache_write_1h), Some(6_000_000));
        assert_eq!(sonnet.output.picos_per_token(), 15_000_000);
        let long = sonnet.long_context.unwrap();
        assert_eq!(long.threshold, 200_000);
        assert_eq!(long.input.picos_per_token(), 6_000_000);
        assert_eq!(long.output.picos_per_token(), 22_500_000);
        assert_eq!(picos(long.cached_input), Some(600_000));
        assert_eq!(picos(long.cache_write), Some(7_500_000));
        assert_eq!(picos(long.cache_write_1h), Some(12_000_000));
        assert_eq!(sonnet.max_output_tokens, Some(64_000));

        let flash = table.get("gemini-2.5-flash").unwrap();
        assert_eq!(flash.input.picos_per_token(), 300_000);
        assert_eq!(picos(flash.cached_input), Some(30_000));
        assert_eq!(flash.output.picos_per_token(), 2_500_000);
        assert_eq!(flash.reasoning, None, "reasoning billed as output");
        assert_eq!(flash.max_output_tokens, Some(65_535));

        let deepseek = table.resolve("deepseek-v3.2").unwrap();
        assert_eq!(deepseek.0, "deepseek-chat");
        assert_eq!(deepseek.1.input.picos_per_token(), 280_000);
        assert_eq!(picos(deepseek.1.cached_input), Some(28_000));
        assert_eq!(deepseek.1.output.picos_per_token(), 420_000);
    }

    #[test]
    fn resolution_rules() {
        let table = PriceTable::builtin();
        let id = |name| table.resolve(name).map(|(id, _)| id.to_owned());
        assert_eq!(id("gpt-4.1").as_deref(), Some("gpt-4.1"));
        assert_eq!(id("gpt-4.1-2025-04-14").as_deref(), Some("gpt-4.1"));
        assert_eq!(
            id("gpt-4.1-mini-2025-04-14").as_deref(),
            Some("gpt-4.1-mini")
        );
        assert_eq!(id("gpt-4o-2024-08-06").as_deref(), Some("gpt-4o"));
        assert_eq!(
            id("gpt-4o-2024-05-13").as_deref(),
            Some("gpt-4o-2024-05-13")
        );
        assert_eq!(
            id("gemini/gemini-2.5-flash").as_deref(),
            Some("gemini-2.5-flash")
        );
        assert_eq!(
            id("models/gemini-2.0-flash-001").as_deref(),
            Some("gemini-2.0-flash")
        );
        assert_eq!(
            id("deepseek/deepseek-chat").as_deref(),
            Some("deepseek-chat")
        );
        assert_eq!(
            id("claude-sonnet-4-5-20250929").as_deref(),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(id("claude-opus-4.1").as_deref(), Some("claude-opus-4-1"));
        assert_eq!(id("Claude-Haiku-4.5").as_deref(), Some("claude-haiku-4-5"));
        assert_eq!(
            id("openrouter/anthropic/claude-sonnet-4.5").as_deref(),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(id(" o3 ").as_deref(), Some("o3"));
        assert_eq!(id("gpt-4.1-preview"), None);
        assert_eq!(id("/"), None);
        assert_eq!(id(""), None);
    }

    #[test]
    fn snapshots_and_dots() {
        assert_eq!(strip_snapshot("gpt-4.1-2025-04-14"), Some("gpt-4.1"));
        assert_eq!(strip_snapshot("claude-x-20250929"), Some("claude-x"));
        assert_eq!(strip_snapshot("claude-x@20250929"), Some("claude-x"));
        assert_eq!(
            strip_snapshot("gemini-2.0-flash-001"),
            Some("gemini-2.0-flash")
        );
        assert_eq!(strip_snapshot("gpt-4.1"), None);
        assert_eq!(strip_snapshot("-001"), None);
        assert_eq!(strip_snapshot("o3-mini"), None);
        assert_eq!(dots_between_digits_to_dashes("a-4.5.6-b.c"), "a-4-5-6-b.c");
        assert_eq!(dots_between_digits_to_dashes(".5."), ".5.");
    }

    #[test]
    fn overrides_aliases_and_bare_names() {
        let mut table = PriceTable::new()
            .with_price("Relay/My-Model", ModelPrice::per_million(1.0, 2.0))
            .with_alias("mine", "relay/my-model");
        assert_eq!(table.resolve("my-model").unwrap().0, "relay/my-model");
        assert_eq!(table.resolve("MINE").unwrap().0, "relay/my-model");
        let old = table.insert("relay/my-model", ModelPrice::per_million(3.0, 4.0));
        assert_eq!(old, Some(ModelPrice::per_million(1.0, 2.0)));
        assert_eq!(table.len(), 1);
        assert!(table.remove("relay/my-model").is_some());
        assert!(table.is_empty());
        assert!(table.resolve("my-model").is_none());
        assert!(table.resolve("mine").is_none(), "an alias without a price");
    }
}
