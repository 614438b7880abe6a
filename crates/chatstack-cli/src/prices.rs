//! `chatstack prices`: the price table, and what a month of tokens costs per model.
//!
//! ```text
//! chatstack prices                               # every built-in model, and the 10M-output plan
//! chatstack prices claude-sonnet-4.5             # one model (aliases and prefixes resolve)
//! chatstack prices --multiplier 0.85             # a relay that bills 85 % of list
//! chatstack prices --prices litellm.json --json  # LiteLLM's prices, as JSON
//! ```
//!
//! Money is never a float here: prices are the table's integer pico-dollars per token and
//! costs come from [`Pricing::compare`] as [`Usd`] (nano-dollars). Exit status: 0, or 2 for
//! an unknown model, an unreadable `--prices` file or a bad `--multiplier`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chatstack::middleware::cost::{
    ModelPrice, PriceComparison, PriceTable, Pricing, TokenCounts, TokenPrice, Usd,
};
use serde_json::{Value, json};

/// The models of the default monthly comparison (those of `shared/PRICING.md`), as a user
/// names them.
pub const COMPARED_MODELS: [&str; 4] = [
    "gpt-4.1",
    "claude-sonnet-4.5",
    "gemini-2.5-flash",
    "deepseek-v3.2",
];

/// Exit status for a usage error (unknown model, bad file, bad flag value).
const USAGE_ERROR: u8 = 2;

/// Arguments of `chatstack prices`.
#[derive(Debug, clap::Args)]
pub struct PricesArgs {
    /// Show only this model (resolved through aliases, provider prefixes and snapshot dates:
    /// `claude-sonnet-4.5`, `deepseek/deepseek-chat`, `gpt-4.1-2025-04-14`), and compare only
    /// it. Default: every model in the table, compared over the four models of PRICING.md.
    pub model: Option<String>,

    /// Output tokens a month, for the comparison.
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub output_tokens: u64,

    /// Input tokens a month (not cached), for the comparison.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub input_tokens: u64,

    /// Multiplier on list prices, for an endpoint that does not bill list price
    /// (0.85: a relay billing 85 % of list). From 0 to 1000.
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = parse_multiplier)]
    pub multiplier: f64,

    /// A LiteLLM `model_prices_and_context_window.json` whose entries override and extend
    /// the built-in prices.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,

    /// Print JSON instead of tables (prices and costs as exact decimal strings).
    #[arg(long)]
    pub json: bool,
}

/// Reads `--multiplier`: a finite number from 0 to 1000.
fn parse_multiplier(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && (0.0..=1000.0).contains(&value) => Ok(value),
        _ => Err(format!("expected a number from 0 to 1000, not `{text}`")),
    }
}

/// Runs `chatstack prices`.
pub fn execute(args: PricesArgs) -> ExitCode {
    let mut table = PriceTable::builtin();
    if let Some(path) = &args.prices {
        match table.load_litellm_file(path) {
            Ok(summary) => {
                if !args.json {
                    eprintln!(
                        "chatstack prices: loaded {} models from {} ({} entries skipped)",
                        summary.loaded,
                        path.display(),
                        summary.skipped
                    );
                }
            }
            Err(error) => {
                eprintln!("chatstack prices: {}: {error}", path.display());
                return ExitCode::from(USAGE_ERROR);
            }
        }
    }

    let rows: Vec<Row> = match &args.model {
        Some(model) => match table.resolve(model) {
            Some((id, price)) => vec![Row::new(id, *price, &[model.as_str()])],
            None => {
                eprintln!(
                    "chatstack prices: no price for model `{model}`{}. Run `chatstack prices` \
                     for the models it knows, or give LiteLLM's prices with --prices FILE.",
                    if args.prices.is_some() {
                        " in the built-in table or the --prices file"
                    } else {
                        " in the built-in table"
                    }
                );
                return ExitCode::from(USAGE_ERROR);
            }
        },
        None => {
            let mut rows: Vec<Row> = table
                .iter()
                .map(|(id, price)| {
                    let aka: Vec<&str> = COMPARED_MODELS
                        .iter()
                        .copied()
                        .filter(|name| {
                            *name != id && table.resolve(name).is_some_and(|(hit, _)| hit == id)
                        })
                        .collect();
                    Row::new(id, *price, &aka)
                })
                .collect();
            rows.sort_by(|a, b| a.id.cmp(&b.id));
            rows
        }
    };

    let workload = TokenCounts {
        input: args.input_tokens,
        output: args.output_tokens,
        ..TokenCounts::default()
    };
    let pricing = Pricing::new(table).multiplier(args.multiplier);
    let compared: Vec<&str> = match &args.model {
        Some(model) => vec![model.as_str()],
        None => COMPARED_MODELS.to_vec(),
    };
    let comparison = pricing.compare(compared, &workload);

    let text = if args.json {
        let mut text = render_json(&rows, &comparison, &workload, args.multiplier).to_string();
        text.push('\n');
        text
    } else {
        let mut text = render_table(&rows);
        text.push('\n');
        text.push_str(&render_comparison(&comparison, &workload, args.multiplier));
        text
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`chatstack prices | head`) is not an error worth a message.
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    ExitCode::SUCCESS
}

/// One model of the price table, as shown.
struct Row {
    id: String,
    price: ModelPrice,
    /// Other names the user may know it by (from [`COMPARED_MODELS`] or the name asked for).
    aka: Vec<String>,
}

impl Row {
    fn new(id: &str, price: ModelPrice, names: &[&str]) -> Self {
        Self {
            id: id.to_owned(),
            price,
            aka: names
                .iter()
                .filter(|name| **name != id)
                .map(|name| (*name).to_owned())
                .collect(),
        }
    }

    fn label(&self) -> String {
        if self.aka.is_empty() {
            self.id.clone()
        } else {
            format!("{} ({})", self.id, self.aka.join(", "))
        }
    }
}

/// A price in dollars per million tokens, with two to six decimals and no `$`: `2.00`,
/// `0.028`. Integer arithmetic only.
fn per_million(price: TokenPrice) -> String {
    let picos = price.picos_per_token();
    let fraction = format!("{:06}", picos % 1_000_000);
    let mut fraction = fraction.trim_end_matches('0').to_owned();
    while fraction.len() < 2 {
        fraction.push('0');
    }
    format!("{}.{fraction}", picos / 1_000_000)
}

/// `per_million` of an optional price, `—` when there is none.
fn per_million_or_dash(price: Option<TokenPrice>) -> String {
    price.map_or_else(|| "—".to_owned(), per_million)
}

/// A count with thousands separators: `10,000,000`.
pub fn thousands(count: u64) -> String {
    let digits = count.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The cache-write cell: `3.75 / 6.00` (5 min / 1 h), one of them, or `—`.
fn cache_write_cell(five_minutes: Option<TokenPrice>, one_hour: Option<TokenPrice>) -> String {
    match (five_minutes, one_hour) {
        (None, None) => "—".to_owned(),
        (five, hour) => format!(
            "{} / {}",
            per_million_or_dash(five),
            per_million_or_dash(hour)
        ),
    }
}

/// The over-200k cell: `in 6.00, out 22.50, read 0.60, write 7.50 / 12.00`, or empty.
fn long_context_cell(price: &ModelPrice) -> String {
    let Some(tier) = price.long_context else {
        return String::new();
    };
    let mut parts = vec![
        format!("in {}", per_million(tier.input)),
        format!("out {}", per_million(tier.output)),
    ];
    if let Some(read) = tier.cached_input {
        parts.push(format!("read {}", per_million(read)));
    }
    if tier.cache_write.is_some() || tier.cache_write_1h.is_some() {
        parts.push(format!(
            "write {}",
            cache_write_cell(tier.cache_write, tier.cache_write_1h)
        ));
    }
    format!("over {}k: {}", tier.threshold / 1_000, parts.join(", "))
}

/// Left-aligned text columns, padded by characters (not bytes: `—` is one column).
fn pad_right(text: &str, width: usize) -> String {
    let len = text.chars().count();
    format!("{text}{}", " ".repeat(width.saturating_sub(len)))
}

/// Right-aligned, by characters.
fn pad_left(text: &str, width: usize) -> String {
    let len = text.chars().count();
    format!("{}{text}", " ".repeat(width.saturating_sub(len)))
}

/// The price table as text.
fn render_table(rows: &[Row]) -> String {
    let header = [
        "model",
        "input",
        "cached input",
        "cache write 5m / 1h",
        "output",
        "long context",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            [
                row.label(),
                per_million(row.price.input),
                per_million_or_dash(row.price.cached_input),
                cache_write_cell(row.price.cache_write, row.price.cache_write_1h),
                per_million(row.price.output),
                long_context_cell(&row.price),
            ]
        })
        .collect();
    let mut widths = header.map(|title| title.chars().count());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::from("Prices in USD per million tokens (standard tier):\n");
    let format_line = |line: [&str; 6]| {
        let mut text = String::from("  ");
        for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
            let padded = match i {
                0 | 5 => pad_right(cell, width),
                _ => pad_left(cell, width),
            };
            text.push_str(&padded);
            if i < 5 {
                text.push_str("  ");
            }
        }
        let mut text = text.trim_end().to_owned();
        text.push('\n');
        text
    };
    out.push_str(&format_line(header));
    for line in &cells {
        out.push_str(&format_line([
            &line[0], &line[1], &line[2], &line[3], &line[4], &line[5],
        ]));
    }
    out
}

/// The multiplier as text, without float noise: `0.85`, `1`.
fn multiplier_text(multiplier: f64) -> String {
    let ppm = (multiplier * 1_000_000.0).round() as u64;
    let fraction = format!("{:06}", ppm % 1_000_000);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}", ppm / 1_000_000)
    } else {
        format!("{}.{fraction}", ppm / 1_000_000)
    }
}

/// Whether the multiplier is 1 (list price).
fn is_list_price(multiplier: f64) -> bool {
    (multiplier * 1_000_000.0).round() as u64 == 1_000_000
}

/// A cost cell: `$80.00`, or `no price` for a model the table does not know.
fn cost_cell(cost: Option<Usd>) -> String {
    cost.map_or_else(|| "no price".to_owned(), |usd| format!("{usd:.2}"))
}

/// The monthly comparison as text.
fn render_comparison(rows: &[PriceComparison], workload: &TokenCounts, multiplier: f64) -> String {
    let mut out = format!(
        "Monthly cost of {} output tokens",
        thousands(workload.output)
    );
    if workload.input > 0 {
        out.push_str(&format!(" and {} input tokens", thousands(workload.input)));
    }
    let list_only = is_list_price(multiplier);
    if list_only {
        out.push_str(" at list price:\n");
    } else {
        out.push_str(&format!(
            " at list price and at ×{}:\n",
            multiplier_text(multiplier)
        ));
    }
    let width = rows
        .iter()
        .map(|row| row.model.chars().count())
        .max()
        .unwrap_or(0)
        .max("model".len());
    let list: Vec<String> = rows.iter().map(|row| cost_cell(row.list)).collect();
    let billed: Vec<String> = rows.iter().map(|row| cost_cell(row.billed)).collect();
    let list_width = list.iter().map(String::len).max().unwrap_or(0).max(4);
    let billed_title = format!("×{}", multiplier_text(multiplier));
    let billed_width = billed
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(billed_title.chars().count());
    out.push_str(&format!(
        "  {}  {}",
        pad_right("model", width),
        pad_left("list", list_width)
    ));
    if !list_only {
        out.push_str(&format!("  {}", pad_left(&billed_title, billed_width)));
    }
    out.push('\n');
    for (i, row) in rows.iter().enumerate() {
        let mut line = format!(
            "  {}  {}",
            pad_right(&row.model, width),
            pad_left(&list[i], list_width)
        );
        if !list_only {
            line.push_str(&format!("  {}", pad_left(&billed[i], billed_width)));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A cost as an exact decimal string of dollars (nine decimals).
fn usd_json(cost: Option<Usd>) -> Value {
    cost.map_or(Value::Null, |usd| {
        let text = format!("{usd:.9}");
        Value::String(text.trim_start_matches('$').to_owned())
    })
}

/// A price as a decimal string of dollars per million tokens.
fn price_json(price: Option<TokenPrice>) -> Value {
    price.map_or(Value::Null, |price| Value::String(per_million(price)))
}

/// Everything as one JSON document.
fn render_json(
    rows: &[Row],
    comparison: &[PriceComparison],
    workload: &TokenCounts,
    multiplier: f64,
) -> Value {
    let models: Vec<Value> = rows
        .iter()
        .map(|row| {
            let price = &row.price;
            let long_context = price.long_context.map(|tier| {
                json!({
                    "threshold_tokens": tier.threshold,
                    "input": per_million(tier.input),
                    "output": per_million(tier.output),
                    "cached_input": price_json(tier.cached_input),
                    "cache_write": price_json(tier.cache_write),
                    "cache_write_1h": price_json(tier.cache_write_1h),
                })
            });
            json!({
                "model": row.id,
                "aliases": row.aka,
                "input": per_million(price.input),
                "cached_input": price_json(price.cached_input),
                "cache_write": price_json(price.cache_write),
                "cache_write_1h": price_json(price.cache_write_1h),
                "output": per_million(price.output),
                "reasoning": price_json(price.reasoning),
                "long_context": long_context,
                "max_input_tokens": price.max_input_tokens,
                "max_output_tokens": price.max_output_tokens,
            })
        })
        .collect();
    let compared: Vec<Value> = comparison
        .iter()
        .map(|row| {
            json!({
                "model": row.model,
                "id": row.id.as_deref(),
                "list_usd": usd_json(row.list),
                "billed_usd": usd_json(row.billed),
            })
        })
        .collect();
    json!({
        "unit": "USD per million tokens",
        "models": models,
        "comparison": {
            "input_tokens": workload.input,
            "output_tokens": workload.output,
            "multiplier": multiplier_text(multiplier),
            "rows": compared,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(per_million(TokenPrice::per_million(2.0)), "2.00");
        assert_eq!(per_million(TokenPrice::per_million(0.028)), "0.028");
        assert_eq!(per_million(TokenPrice::per_million(22.5)), "22.50");
        assert_eq!(thousands(10_000_000), "10,000,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(multiplier_text(0.85), "0.85");
        assert_eq!(multiplier_text(1.0), "1");
        assert!(parse_multiplier("nan").is_err());
        assert!(parse_multiplier("-1").is_err());
        assert_eq!(parse_multiplier("0.85"), Ok(0.85));
    }
}
