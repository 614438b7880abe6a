//! Loading LiteLLM's `model_prices_and_context_window.json` into a [`PriceTable`].

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::money::TokenPrice;
use super::price::ModelPrice;
use super::table::PriceTable;

/// What a LiteLLM load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadSummary {
    /// Entries read into the table.
    pub loaded: usize,
    /// Entries left out: not chat models, without input and output prices, or with fields
    /// of the wrong type.
    pub skipped: usize,
}

/// Why a LiteLLM price file could not be loaded at all.
///
/// A bad entry is never one of these: it is skipped and counted in
/// [`LoadSummary::skipped`]. Only a file that cannot be read, is not JSON, or is not a JSON
/// object of entries is an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadPricesError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The text is not JSON.
    Json(serde_json::Error),
    /// The JSON is not an object of model entries.
    NotAnObject,
}

impl fmt::Display for LoadPricesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(error) => write!(f, "the price file cannot be read: {error}"),
            Self::Json(error) => write!(f, "the price file is not valid JSON: {error}"),
            Self::NotAnObject => f.write_str(
                "the price file is not a JSON object of model entries (LiteLLM's format)",
            ),
        }
    }
}

impl std::error::Error for LoadPricesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(error) => Some(error),
            Self::Json(error) => Some(error),
            Self::NotAnObject => None,
        }
    }
}

/// The fields of a LiteLLM entry that price a chat model (per token, in dollars). Others
/// are ignored.
#[derive(Deserialize)]
struct Entry {
    input_cost_per_token: Option<f64>,
    output_cost_per_token: Option<f64>,
    cache_read_input_token_cost: Option<f64>,
    cache_creation_input_token_cost: Option<f64>,
    cache_creation_input_token_cost_above_1hr: Option<f64>,
    output_cost_per_reasoning_token: Option<f64>,
    input_cost_per_token_above_200k_tokens: Option<f64>,
    output_cost_per_token_above_200k_tokens: Option<f64>,
    cache_read_input_token_cost_above_200k_tokens: Option<f64>,
    cache_creation_input_token_cost_above_200k_tokens: Option<f64>,
    cache_creation_input_token_cost_above_1hr_above_200k_tokens: Option<f64>,
    #[serde(default, deserialize_with = "lenient_count")]
    max_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient_count")]
    max_output_tokens: Option<u64>,
    mode: Option<String>,
}

/// A token count written as an integer or a float; anything else (LiteLLM's `sample_spec`
/// writes prose there) is unknown.
fn lenient_count<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)))
}

/// A price that is usable: finite and not negative.
fn price(value: Option<f64>) -> Option<TokenPrice> {
    value
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(TokenPrice::per_token)
}

impl Entry {
    fn into_price(self) -> Option<ModelPrice> {
        if self
            .mode
            .as_deref()
            .is_some_and(|mode| mode != "chat" && mode != "responses")
        {
            return None;
        }
        let mut model = ModelPrice::from_prices(
            price(self.input_cost_per_token)?,
            price(self.output_cost_per_token)?,
        );
        model.cached_input = price(self.cache_read_input_token_cost);
        model.cache_write = price(self.cache_creation_input_token_cost);
        model.cache_write_1h = price(self.cache_creation_input_token_cost_above_1hr);
        model.reasoning = price(self.output_cost_per_reasoning_token);
        model.max_input_tokens = self.max_input_tokens;
        model.max_output_tokens = self.max_output_tokens;
        let long_input = price(self.input_cost_per_token_above_200k_tokens);
        let long_output = price(self.output_cost_per_token_above_200k_tokens);
        if long_input.is_some() || long_output.is_some() {
            let (input, output) = (model.input, model.output);
            let tier = model.long_context_mut();
            tier.input = long_input.unwrap_or(input);
            tier.output = long_output.unwrap_or(output);
            tier.cached_input = price(self.cache_read_input_token_cost_above_200k_tokens);
            tier.cache_write = price(self.cache_creation_input_token_cost_above_200k_tokens);
            tier.cache_write_1h =
                price(self.cache_creation_input_token_cost_above_1hr_above_200k_tokens);
        }
        Some(model)
    }
}

impl PriceTable {
    /// A table of the chat models of a LiteLLM `model_prices_and_context_window.json`
    /// (with the built-in aliases, but none of the built-in prices), and what was skipped.
    ///
    /// ```
    /// use chatstack_middleware::cost::PriceTable;
    ///
    /// let json = r#"{
    ///     "gemini/gemini-2.5-flash": {
    ///         "litellm_provider": "gemini", "mode": "chat",
    ///         "input_cost_per_token": 3e-07, "output_cost_per_token": 2.5e-06,
    ///         "cache_read_input_token_cost": 3e-08, "max_output_tokens": 65535,
    ///         "supports_vision": true
    ///     },
    ///     "text-embedding-3-small": {"mode": "embedding", "input_cost_per_token": 2e-08}
    /// }"#;
    /// let (table, summary) = PriceTable::from_litellm_json(json).unwrap();
    /// assert_eq!((summary.loaded, summary.skipped), (1, 1));
    /// let (id, price) = table.resolve("gemini-2.5-flash").unwrap();
    /// assert_eq!(id, "gemini/gemini-2.5-flash");
    /// assert_eq!(price.output.to_string(), "$2.50/M");
    /// ```
    pub fn from_litellm_json(json: &str) -> Result<(Self, LoadSummary), LoadPricesError> {
        let mut table = Self::new();
        let summary = table.load_litellm_json(json)?;
        Ok((table, summary))
    }

    /// Reads the chat models of a LiteLLM `model_prices_and_context_window.json` into this
    /// table; an entry replaces the price of the same id (so loading into
    /// [`builtin`](Self::builtin) overrides the built-in prices LiteLLM also has).
    ///
    /// Field names and units are LiteLLM's (dollars per token): `input_cost_per_token`,
    /// `output_cost_per_token`, `cache_read_input_token_cost`,
    /// `cache_creation_input_token_cost` (5 min), `cache_creation_input_token_cost_above_1hr`,
    /// `output_cost_per_reasoning_token`, `input_cost_per_token_above_200k_tokens`,
    /// `output_cost_per_token_above_200k_tokens` (and the `cache_*_above_200k_tokens`
    /// variants), `max_input_tokens`, `max_output_tokens`, `mode`. Other fields, batch
    /// prices included, are ignored. Entries whose `mode` is neither `chat` nor `responses`,
    /// that lack an input or an output price, or whose fields have the wrong type, are
    /// skipped. The keys keep their provider prefixes (`gemini/gemini-2.5-flash`), which
    /// [`resolve`](Self::resolve) sees through.
    pub fn load_litellm_json(&mut self, json: &str) -> Result<LoadSummary, LoadPricesError> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(LoadPricesError::Json)?;
        let serde_json::Value::Object(entries) = value else {
            return Err(LoadPricesError::NotAnObject);
        };
        let mut summary = LoadSummary::default();
        for (key, entry) in entries {
            match serde_json::from_value::<Entry>(entry)
                .ok()
                .and_then(Entry::into_price)
            {
                Some(price) => {
                    self.insert(&key, price);
                    summary.loaded += 1;
                }
                None => summary.skipped += 1,
            }
        }
        Ok(summary)
    }

    /// [`load_litellm_json`](Self::load_litellm_json) from a file.
    pub fn load_litellm_file(
        &mut self,
        path: impl AsRef<Path>,
    ) -> Result<LoadSummary, LoadPricesError> {
        let json = std::fs::read_to_string(path).map_err(LoadPricesError::Io)?;
        self.load_litellm_json(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_files_are_typed_errors() {
        let mut table = PriceTable::new();
        assert!(matches!(
            table.load_litellm_json("{"),
            Err(LoadPricesError::Json(_))
        ));
        assert!(matches!(
            table.load_litellm_json("[1, 2]"),
            Err(LoadPricesError::NotAnObject)
        ));
        let missing = table.load_litellm_file("/nonexistent/prices.json");
        assert!(matches!(missing, Err(LoadPricesError::Io(_))));
        assert!(missing.unwrap_err().to_string().contains("cannot be read"));
    }

    #[test]
    fn bad_entries_are_skipped() {
        let json = r#"{
            "sample_spec": {"mode": "one of: chat, embedding", "max_input_tokens": "prose",
                            "input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
            "no-output": {"mode": "chat", "input_cost_per_token": 1e-06},
            "negative": {"mode": "chat", "input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06},
            "wrong-type": {"mode": "chat", "input_cost_per_token": "1e-06", "output_cost_per_token": 1e-06},
            "not-an-object": 3,
            "image": {"mode": "image_generation", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "no-mode": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "max_output_tokens": 4096.0},
            "free": {"mode": "chat", "input_cost_per_token": 0, "output_cost_per_token": 0}
        }"#;
        let (table, summary) = PriceTable::from_litellm_json(json).unwrap();
        assert_eq!((summary.loaded, summary.skipped), (2, 6));
        assert_eq!(table.get("no-mode").unwrap().max_output_tokens, Some(4096));
        assert_eq!(table.get("free").unwrap().output, TokenPrice::ZERO);
    }
}
