//! The price of one model ([`ModelPrice`]), the tokens of a response by category
//! ([`TokenCounts`]), and how the two make a cost.

use std::ops::AddAssign;

use chatstack_proto::Usage;

use super::money::{TokenPrice, Usd};

/// The prompt size above which [`LongContextPrice`]s apply, as in LiteLLM's
/// `*_above_200k_tokens` fields.
pub const LONG_CONTEXT_THRESHOLD: u64 = 200_000;

/// Which cache-write price applies: Anthropic bills a 5-minute cache write at 1.25× input and
/// a 1-hour one at 2×; the usage does not say which was asked for, so the caller does.
///
/// Set it for all requests with [`Pricing::cache_write_ttl`](super::Pricing::cache_write_ttl),
/// or per request by inserting it into
/// [`RequestMeta::extensions`](chatstack_proto::RequestMeta::extensions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CacheTtl {
    /// The 5-minute cache (Anthropic's default), at [`ModelPrice::cache_write`].
    #[default]
    FiveMinutes,
    /// The 1-hour cache, at [`ModelPrice::cache_write_1h`].
    OneHour,
}

/// The tokens of one response (or of many, summed), split by how they are billed.
///
/// The categories do not overlap: [`input`](Self::input) is the prompt tokens that were
/// neither read from nor written to the cache, and [`output`](Self::output) the completion
/// tokens that were not reasoning.
///
/// # Usage conventions
///
/// chatstack sees OpenAI-style usage, also through the OpenAI-compatible endpoints of other
/// providers, and [`from_usage`](Self::from_usage) reads it so: `prompt_tokens` includes
/// `prompt_tokens_details.cached_tokens` and `cache_write_tokens`, and `completion_tokens`
/// includes `completion_tokens_details.reasoning_tokens`.
///
/// Anthropic's own Messages API counts differently: its `input_tokens` *excludes*
/// `cache_read_input_tokens` and `cache_creation_input_tokens`, which are reported beside it
/// (LiteLLM and Anthropic's OpenAI-compatible endpoint add them into `prompt_tokens`). To
/// price a native Anthropic usage, fill the fields directly:
///
/// ```
/// use chatstack_middleware::cost::TokenCounts;
///
/// // {"input_tokens": 50, "cache_read_input_tokens": 1000,
/// //  "cache_creation_input_tokens": 200, "output_tokens": 300}
/// let tokens = TokenCounts {
///     input: 50,
///     cached_input: 1_000,
///     cache_write: 200,
///     output: 300,
///     reasoning: 0,
/// };
/// assert_eq!(tokens.prompt(), 1_250);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokenCounts {
    /// Prompt tokens billed at the input rate.
    pub input: u64,
    /// Prompt tokens read from the cache.
    pub cached_input: u64,
    /// Prompt tokens written to the cache.
    pub cache_write: u64,
    /// Completion tokens that were not reasoning.
    pub output: u64,
    /// Completion tokens spent on hidden reasoning.
    pub reasoning: u64,
}

impl TokenCounts {
    /// Splits an OpenAI-style usage into categories. Details larger than their totals are
    /// taken at their word: the rest of the total is zero, never negative.
    ///
    /// ```
    /// use chatstack_middleware::cost::TokenCounts;
    /// use chatstack_proto::Usage;
    ///
    /// let mut usage = Usage::new(1_000, 400);
    /// usage.prompt_tokens_details.cached_tokens = 600;
    /// usage.completion_tokens_details.reasoning_tokens = 150;
    /// let tokens = TokenCounts::from_usage(&usage);
    /// assert_eq!((tokens.input, tokens.cached_input), (400, 600));
    /// assert_eq!((tokens.output, tokens.reasoning), (250, 150));
    /// ```
    pub fn from_usage(usage: &Usage) -> Self {
        let prompt = &usage.prompt_tokens_details;
        let completion = &usage.completion_tokens_details;
        Self {
            input: usage
                .prompt_tokens
                .saturating_sub(prompt.cached_tokens)
                .saturating_sub(prompt.cache_write_tokens),
            cached_input: prompt.cached_tokens,
            cache_write: prompt.cache_write_tokens,
            output: usage
                .completion_tokens
                .saturating_sub(completion.reasoning_tokens),
            reasoning: completion.reasoning_tokens,
        }
    }

    /// All prompt tokens: input, cached and cache-write.
    pub fn prompt(&self) -> u64 {
        self.input
            .saturating_add(self.cached_input)
            .saturating_add(self.cache_write)
    }

    /// All completion tokens: output and reasoning.
    pub fn completion(&self) -> u64 {
        self.output.saturating_add(self.reasoning)
    }

    /// Every token.
    pub fn total(&self) -> u64 {
        self.prompt().saturating_add(self.completion())
    }
}

impl AddAssign for TokenCounts {
    /// Adds category by category, saturating.
    fn add_assign(&mut self, other: Self) {
        self.input = self.input.saturating_add(other.input);
        self.cached_input = self.cached_input.saturating_add(other.cached_input);
        self.cache_write = self.cache_write.saturating_add(other.cache_write);
        self.output = self.output.saturating_add(other.output);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
    }
}

/// The prices of one model, per token category, with its limits.
///
/// Built from prices in dollars per million tokens; the builder methods never panic (a NaN
/// or a negative price is free, see [`TokenPrice`]). Fields left unset fall back:
///
/// | category | unset means |
/// |---|---|
/// | [`cached_input`](Self::cached_input) | the input price (no cache discount) |
/// | [`cache_write`](Self::cache_write) | the input price (cache writes cost nothing extra, as at OpenAI) |
/// | [`cache_write_1h`](Self::cache_write_1h) | the 5-minute cache-write price |
/// | [`reasoning`](Self::reasoning) | the output price (of the tier in force) |
/// | [`long_context`](Self::long_context) | no tier: every prompt at the prices above |
///
/// ```
/// use chatstack_middleware::cost::{CacheTtl, ModelPrice, TokenCounts, Usd};
///
/// // claude-sonnet-4.5, dollars per million tokens.
/// let price = ModelPrice::per_million(3.0, 15.0)
///     .cached_input(0.30)
///     .cache_write(3.75)
///     .cache_write_1h(6.0)
///     .above_200k(6.0, 22.5)
///     .max_output_tokens(64_000);
/// let tokens = TokenCounts { input: 1_000, output: 100, ..TokenCounts::default() };
/// // 1,000 × $3/M + 100 × $15/M = $0.0045
/// assert_eq!(price.cost(&tokens, CacheTtl::FiveMinutes), Usd::from_micros(4_500));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ModelPrice {
    /// Prompt tokens not read from or written to the cache.
    pub input: TokenPrice,
    /// Prompt tokens read from the cache.
    pub cached_input: Option<TokenPrice>,
    /// Prompt tokens written to the 5-minute cache.
    pub cache_write: Option<TokenPrice>,
    /// Prompt tokens written to the 1-hour cache.
    pub cache_write_1h: Option<TokenPrice>,
    /// Completion tokens.
    pub output: TokenPrice,
    /// Reasoning tokens, where the model prices them apart from output.
    pub reasoning: Option<TokenPrice>,
    /// The prices for prompts over a size (Claude's and Gemini Pro's over-200k tier).
    pub long_context: Option<LongContextPrice>,
    /// The context window for the prompt, when known.
    pub max_input_tokens: Option<u64>,
    /// The most tokens the model generates in one response, when known: the worst case a
    /// budget reserves for a request that sets no cap.
    pub max_output_tokens: Option<u64>,
}

/// The prices that apply to a request whose prompt (input, cached and cache-write tokens
/// together) is larger than [`threshold`](Self::threshold) tokens: then **all** of that
/// request's tokens, output included, are billed at these prices.
///
/// Unset cache prices are the base ones scaled like the input price (Claude's and Gemini's
/// long-context cache prices are exactly that: twice the base).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LongContextPrice {
    /// Prompt tokens above which this tier applies (exclusive).
    pub threshold: u64,
    /// Input price in this tier.
    pub input: TokenPrice,
    /// Output price in this tier.
    pub output: TokenPrice,
    /// Cached-input price in this tier.
    pub cached_input: Option<TokenPrice>,
    /// 5-minute cache-write price in this tier.
    pub cache_write: Option<TokenPrice>,
    /// 1-hour cache-write price in this tier.
    pub cache_write_1h: Option<TokenPrice>,
}

/// The per-token rates in force for one request, in pico-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rates {
    input: u64,
    cached_input: u64,
    cache_write: u64,
    output: u64,
    reasoning: u64,
}

impl Rates {
    fn picos(&self, tokens: &TokenCounts) -> u128 {
        // Each product fits in a u128 (at most (2^64 - 1)^2); their sum may not, for absurd
        // prices or counts from a hostile server or price file, so it saturates.
        let cost = |count: u64, rate: u64| u128::from(count) * u128::from(rate);
        [
            cost(tokens.input, self.input),
            cost(tokens.cached_input, self.cached_input),
            cost(tokens.cache_write, self.cache_write),
            cost(tokens.output, self.output),
            cost(tokens.reasoning, self.reasoning),
        ]
        .into_iter()
        .fold(0, u128::saturating_add)
    }
}

impl ModelPrice {
    /// A model billed `input` and `output` dollars per million tokens, with nothing else set.
    pub fn per_million(input: f64, output: f64) -> Self {
        Self::from_prices(
            TokenPrice::per_million(input),
            TokenPrice::per_million(output),
        )
    }

    /// A model billed `input` and `output` per token, with nothing else set.
    pub fn from_prices(input: TokenPrice, output: TokenPrice) -> Self {
        Self {
            input,
            output,
            ..Self::default()
        }
    }

    /// Sets the cached-input (cache read) price, in dollars per million tokens.
    pub fn cached_input(mut self, per_million: f64) -> Self {
        self.cached_input = Some(TokenPrice::per_million(per_million));
        self
    }

    /// Sets the 5-minute cache-write price, in dollars per million tokens.
    pub fn cache_write(mut self, per_million: f64) -> Self {
        self.cache_write = Some(TokenPrice::per_million(per_million));
        self
    }

    /// Sets the 1-hour cache-write price, in dollars per million tokens.
    pub fn cache_write_1h(mut self, per_million: f64) -> Self {
        self.cache_write_1h = Some(TokenPrice::per_million(per_million));
        self
    }

    /// Sets a reasoning price apart from the output price, in dollars per million tokens.
    pub fn reasoning(mut self, per_million: f64) -> Self {
        self.reasoning = Some(TokenPrice::per_million(per_million));
        self
    }

    /// Sets the input and output prices, in dollars per million tokens, of prompts over
    /// [`LONG_CONTEXT_THRESHOLD`] tokens.
    pub fn above_200k(mut self, input: f64, output: f64) -> Self {
        let tier = self.long_context_mut();
        tier.input = TokenPrice::per_million(input);
        tier.output = TokenPrice::per_million(output);
        self
    }

    /// Sets the cached-input price of prompts over [`LONG_CONTEXT_THRESHOLD`] tokens.
    pub fn above_200k_cached_input(mut self, per_million: f64) -> Self {
        self.long_context_mut().cached_input = Some(TokenPrice::per_million(per_million));
        self
    }

    /// Sets the 5-minute and 1-hour cache-write prices of prompts over
    /// [`LONG_CONTEXT_THRESHOLD`] tokens.
    pub fn above_200k_cache_write(mut self, five_minutes: f64, one_hour: f64) -> Self {
        let tier = self.long_context_mut();
        tier.cache_write = Some(TokenPrice::per_million(five_minutes));
        tier.cache_write_1h = Some(TokenPrice::per_million(one_hour));
        self
    }

    /// Sets the context window for the prompt.
    pub fn max_input_tokens(mut self, tokens: u64) -> Self {
        self.max_input_tokens = Some(tokens);
        self
    }

    /// Sets the most tokens the model generates in one response.
    pub fn max_output_tokens(mut self, tokens: u64) -> Self {
        self.max_output_tokens = Some(tokens);
        self
    }

    /// The long-context tier, made with the base prices if there was none.
    pub(crate) fn long_context_mut(&mut self) -> &mut LongContextPrice {
        let (input, output) = (self.input, self.output);
        self.long_context.get_or_insert(LongContextPrice {
            threshold: LONG_CONTEXT_THRESHOLD,
            input,
            output,
            cached_input: None,
            cache_write: None,
            cache_write_1h: None,
        })
    }

    /// What `tokens` cost at list price: the long-context tier applies when their prompt is
    /// over its threshold. Rounded to the nearest nano-dollar.
    pub fn cost(&self, tokens: &TokenCounts, ttl: CacheTtl) -> Usd {
        let (picos, _) = self.picos(tokens, ttl);
        Usd::from_picos_scaled(picos, 1_000_000)
    }

    /// Whether a request with `prompt_tokens` prompt tokens is billed at the long-context
    /// tier.
    pub fn is_long_context(&self, prompt_tokens: u64) -> bool {
        self.long_context
            .is_some_and(|tier| prompt_tokens > tier.threshold)
    }

    /// The cost of `tokens` in pico-dollars at list price, and whether the long-context tier
    /// applied.
    pub(crate) fn picos(&self, tokens: &TokenCounts, ttl: CacheTtl) -> (u128, bool) {
        let long = self.is_long_context(tokens.prompt());
        (self.rates(long, ttl).picos(tokens), long)
    }

    /// The cost of `tokens` at the base tier, whatever their size: for volumes summed over
    /// many requests (a month's traffic), which no single prompt reaches.
    pub(crate) fn base_picos(&self, tokens: &TokenCounts, ttl: CacheTtl) -> u128 {
        self.rates(false, ttl).picos(tokens)
    }

    /// The most a request may cost, in pico-dollars: `prompt_tokens` at the dearest rate a
    /// prompt token can be billed at (input, or a cache write at `ttl` where that is
    /// dearer), and `output_tokens` at the dearest completion rate (output, or reasoning).
    #[cfg(feature = "budget")]
    pub(crate) fn worst_case_picos(
        &self,
        prompt_tokens: u64,
        output_tokens: u64,
        ttl: CacheTtl,
    ) -> u128 {
        let rates = self.rates(self.is_long_context(prompt_tokens), ttl);
        let prompt_rate = rates.input.max(rates.cache_write);
        let completion_rate = rates.output.max(rates.reasoning);
        (u128::from(prompt_tokens) * u128::from(prompt_rate))
            .saturating_add(u128::from(output_tokens) * u128::from(completion_rate))
    }

    /// The rates in force for a request: the base ones, or the long-context tier's.
    fn rates(&self, long: bool, ttl: CacheTtl) -> Rates {
        let base_write_5m = self.cache_write.unwrap_or(self.input);
        let base_write = match ttl {
            CacheTtl::FiveMinutes => base_write_5m,
            CacheTtl::OneHour => self.cache_write_1h.unwrap_or(base_write_5m),
        };
        let base = Rates {
            input: self.input.picos_per_token(),
            cached_input: self.cached_input.unwrap_or(self.input).picos_per_token(),
            cache_write: base_write.picos_per_token(),
            output: self.output.picos_per_token(),
            reasoning: self.reasoning.unwrap_or(self.output).picos_per_token(),
        };
        let tier = match self.long_context {
            Some(tier) if long => tier,
            _ => return base,
        };
        // An unset tier price is the base one scaled like input.
        let scaled = |base_rate: u64| -> u64 {
            match self.input.picos_per_token() {
                0 => base_rate,
                base_input => {
                    let scaled = u128::from(base_rate) * u128::from(tier.input.picos_per_token())
                        / u128::from(base_input);
                    u64::try_from(scaled).unwrap_or(u64::MAX)
                }
            }
        };
        let tier_write_5m = tier.cache_write.map_or_else(
            || scaled(base_write_5m.picos_per_token()),
            TokenPrice::picos_per_token,
        );
        let tier_write = match ttl {
            CacheTtl::FiveMinutes => tier_write_5m,
            CacheTtl::OneHour => match (tier.cache_write_1h, self.cache_write_1h) {
                (Some(price), _) => price.picos_per_token(),
                (None, Some(base_1h)) => scaled(base_1h.picos_per_token()),
                (None, None) => tier_write_5m,
            },
        };
        Rates {
            input: tier.input.picos_per_token(),
            cached_input: tier
                .cached_input
                .map_or_else(|| scaled(base.cached_input), TokenPrice::picos_per_token),
            cache_write: tier_write,
            output: tier.output.picos_per_token(),
            reasoning: self.reasoning.unwrap_or(tier.output).picos_per_token(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sonnet() -> ModelPrice {
        ModelPrice::per_million(3.0, 15.0)
            .cached_input(0.30)
            .cache_write(3.75)
            .cache_write_1h(6.0)
            .above_200k(6.0, 22.5)
    }

    #[test]
    fn unset_prices_fall_back() {
        let bare = ModelPrice::per_million(2.0, 8.0);
        let rates = bare.rates(false, CacheTtl::OneHour);
        assert_eq!(rates.cached_input, 2_000_000);
        assert_eq!(rates.cache_write, 2_000_000);
        assert_eq!(rates.reasoning, 8_000_000);
        assert_eq!(bare.rates(true, CacheTtl::FiveMinutes), rates, "no tier");
    }

    #[test]
    fn long_context_tier_scales_unset_cache_prices_like_input() {
        let rates = sonnet().rates(true, CacheTtl::FiveMinutes);
        assert_eq!(
            rates,
            Rates {
                input: 6_000_000,
                cached_input: 600_000,
                cache_write: 7_500_000,
                output: 22_500_000,
                reasoning: 22_500_000,
            }
        );
        assert_eq!(
            sonnet().rates(true, CacheTtl::OneHour).cache_write,
            12_000_000
        );
        let explicit = sonnet()
            .above_200k_cached_input(0.5)
            .above_200k_cache_write(7.0, 11.0);
        let rates = explicit.rates(true, CacheTtl::OneHour);
        assert_eq!(
            (rates.cached_input, rates.cache_write),
            (500_000, 11_000_000)
        );
    }

    #[test]
    fn the_tier_starts_above_the_threshold() {
        let price = sonnet();
        assert!(!price.is_long_context(200_000));
        assert!(price.is_long_context(200_001));
        let at = TokenCounts {
            input: 200_000,
            ..TokenCounts::default()
        };
        assert_eq!(price.cost(&at, CacheTtl::FiveMinutes), Usd::from_cents(60));
        let over = TokenCounts {
            input: 200_001,
            ..TokenCounts::default()
        };
        // 200,001 × $6/M = $1.200006
        assert_eq!(
            price.cost(&over, CacheTtl::FiveMinutes),
            Usd::from_micros(1_200_006)
        );
    }

    #[test]
    #[cfg(feature = "budget")]
    fn worst_case_takes_the_dearest_rates() {
        let price = sonnet().reasoning(20.0);
        // 1,000 × $3.75/M + 100 × $20/M
        assert_eq!(
            price.worst_case_picos(1_000, 100, CacheTtl::FiveMinutes),
            3_750_000_000 + 2_000_000_000
        );
        // 1-hour cache writes at $6/M.
        assert_eq!(
            price.worst_case_picos(1_000, 0, CacheTtl::OneHour),
            6_000_000_000
        );
    }

    #[test]
    fn counts_split_and_add() {
        let mut usage = Usage::new(10, 5);
        usage.prompt_tokens_details.cached_tokens = 8;
        usage.prompt_tokens_details.cache_write_tokens = 8;
        usage.completion_tokens_details.reasoning_tokens = 9;
        let tokens = TokenCounts::from_usage(&usage);
        assert_eq!(
            tokens,
            TokenCounts {
                input: 0,
                cached_input: 8,
                cache_write: 8,
                output: 0,
                reasoning: 9
            }
        );
        let mut sum = tokens;
        sum += tokens;
        assert_eq!(sum.total(), 2 * tokens.total());
        assert_eq!(tokens.completion(), 9);
    }
}
