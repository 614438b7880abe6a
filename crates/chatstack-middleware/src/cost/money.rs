//! Money as integers: [`Usd`] (nano-dollars) and [`TokenPrice`] (pico-dollars per token).
//!
//! Floating point never touches a sum: a price is an integer count of pico-dollars per token
//! (a millionth of a dollar per million tokens, so every price LiteLLM publishes, down to
//! $0.01 per million, is exact), a response's cost is computed in pico-dollars as a 128-bit
//! integer and rounded once, to the nearest nano-dollar, into a [`Usd`]. Sums of [`Usd`] are
//! exact integer additions. `f64` appears only at the edges: reading prices written as
//! decimals, and showing amounts.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};
use std::str::FromStr;

/// Nano-dollars in a dollar.
const NANOS_PER_DOLLAR: u64 = 1_000_000_000;
/// Pico-dollars in a nano-dollar.
const PICOS_PER_NANO: u128 = 1_000;

/// An amount of US dollars, held as an integer count of nano-dollars ($10⁻⁹).
///
/// Addition saturates (at about $18.4 billion) instead of wrapping. `Display` shows six
/// decimals, rounded half up (`$1.234567`); a precision chooses others (`{:.2}` gives
/// `$80.00`). [`FromStr`] reads `"$1.50"`, `"1.5"` or `"0.000000001"` exactly, without
/// going through `f64`, so a budget given on a command line is exact.
///
/// ```
/// use chatstack_middleware::cost::Usd;
///
/// let cap: Usd = "$12.50".parse().unwrap();
/// assert_eq!(cap, Usd::from_nanos(12_500_000_000));
/// assert_eq!(cap.to_string(), "$12.500000");
/// assert_eq!(format!("{:.2}", Usd::from_nanos(4_199_999_999)), "$4.20");
/// let sum: Usd = [Usd::from_nanos(1), Usd::from_nanos(2)].into_iter().sum();
/// assert_eq!(sum.as_nanos(), 3);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(u64);

impl Usd {
    /// Nothing.
    pub const ZERO: Self = Self(0);
    /// The largest amount a `Usd` holds.
    pub const MAX: Self = Self(u64::MAX);

    /// `nanos` nano-dollars.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// `micros` micro-dollars (saturating).
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros.saturating_mul(1_000))
    }

    /// `cents` cents (saturating).
    pub const fn from_cents(cents: u64) -> Self {
        Self(cents.saturating_mul(10_000_000))
    }

    /// `dollars` whole dollars (saturating).
    pub const fn from_dollars(dollars: u64) -> Self {
        Self(dollars.saturating_mul(NANOS_PER_DOLLAR))
    }

    /// The amount in nano-dollars.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Dollars given as a float, rounded to the nearest nano-dollar: for amounts that come
    /// from elsewhere as floats. A NaN or a negative amount is zero, a huge one [`Usd::MAX`].
    /// Prefer [`FromStr`] for amounts a user typed: it is exact.
    pub fn from_dollars_f64(dollars: f64) -> Self {
        // `as` saturates: NaN and negatives become 0, too large becomes u64::MAX.
        Self((dollars * NANOS_PER_DOLLAR as f64).round() as u64)
    }

    /// The amount in dollars as a float, for display and plotting only: never add these up.
    pub fn as_dollars_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_DOLLAR as f64
    }

    /// `self + other`, saturating at [`Usd::MAX`].
    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self - other`, or zero when `other` is larger.
    pub const fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }

    /// `self - other`, or `None` when `other` is larger.
    pub const fn checked_sub(self, other: Self) -> Option<Self> {
        match self.0.checked_sub(other.0) {
            Some(nanos) => Some(Self(nanos)),
            None => None,
        }
    }

    /// Rounds a pico-dollar amount, scaled by `ppm` parts per million, to the nearest
    /// nano-dollar (half up), saturating.
    pub(crate) fn from_picos_scaled(picos: u128, ppm: u64) -> Self {
        let scaled = picos.saturating_mul(u128::from(ppm));
        let divisor = PICOS_PER_NANO * 1_000_000;
        let nanos = scaled.saturating_add(divisor / 2) / divisor;
        Self(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Like [`from_picos_scaled`](Self::from_picos_scaled), rounding up: for worst cases.
    #[cfg(feature = "budget")]
    pub(crate) fn from_picos_scaled_up(picos: u128, ppm: u64) -> Self {
        let scaled = picos.saturating_mul(u128::from(ppm));
        let nanos = scaled.div_ceil(PICOS_PER_NANO * 1_000_000);
        Self(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl Add for Usd {
    type Output = Self;

    /// Saturating addition.
    fn add(self, other: Self) -> Self {
        self.saturating_add(other)
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, other: Self) {
        *self = self.saturating_add(other);
    }
}

impl Sum for Usd {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Usd> for Usd {
    fn sum<I: Iterator<Item = &'a Usd>>(iter: I) -> Self {
        iter.copied().sum()
    }
}

impl fmt::Display for Usd {
    /// `$` and the dollars with six decimals by default, or with the formatter's precision,
    /// rounded half up. Width, fill and alignment apply to the whole text (right-aligned by
    /// default, as numbers are).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let precision = f.precision().unwrap_or(6);
        let shown = precision.min(9) as u32;
        let unit = 10_u128.pow(9 - shown);
        let rounded = (u128::from(self.0) + unit / 2) / unit;
        let scale = 10_u128.pow(shown);
        let mut text = format!("${}", rounded / scale);
        if precision > 0 {
            let fraction = rounded % scale;
            text.push_str(&format!(".{fraction:0width$}", width = shown as usize));
            text.extend(std::iter::repeat_n('0', precision - shown as usize));
        }
        pad(f, &text)
    }
}

impl fmt::Debug for Usd {
    /// The exact amount: `$` and nine decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:.9}")
    }
}

/// Writes `text` with the formatter's width, fill and alignment (right by default), but not
/// its precision, which `Formatter::pad` would use to cut the text.
fn pad(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    let len = text.chars().count();
    let Some(width) = f.width().filter(|width| *width > len) else {
        return f.write_str(text);
    };
    let gap = width - len;
    let (before, after) = match f.align() {
        Some(fmt::Alignment::Left) => (0, gap),
        Some(fmt::Alignment::Center) => (gap / 2, gap - gap / 2),
        Some(fmt::Alignment::Right) | None => (gap, 0),
    };
    let fill = f.fill();
    for _ in 0..before {
        write!(f, "{fill}")?;
    }
    f.write_str(text)?;
    for _ in 0..after {
        write!(f, "{fill}")?;
    }
    Ok(())
}

/// Why a text is not an amount of dollars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseUsdError {
    text: String,
    reason: &'static str,
}

impl fmt::Display for ParseUsdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an amount of dollars: {}",
            self.text, self.reason
        )
    }
}

impl std::error::Error for ParseUsdError {}

impl FromStr for Usd {
    type Err = ParseUsdError;

    /// Reads a non-negative decimal amount of dollars with at most nine decimals, with or
    /// without a leading `$`, surrounding whitespace ignored: `"$5"`, `"0.25"`, `"$.5"`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason| ParseUsdError {
            text: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        let number = trimmed.strip_prefix('$').unwrap_or(trimmed);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(error("no digits"));
        }
        if !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return Err(error("only digits and one decimal point are allowed"));
        }
        if fraction.len() > 9 {
            return Err(error("more than nine decimals (finer than a nano-dollar)"));
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| error("too large"))?
        };
        let fraction: u64 = if fraction.is_empty() {
            0
        } else {
            // At most nine digits: fits, then scaled to nano-dollars.
            fraction.parse::<u64>().map_err(|_| error("too large"))?
                * 10_u64.pow(9 - fraction.len() as u32)
        };
        whole
            .checked_mul(NANOS_PER_DOLLAR)
            .and_then(|nanos| nanos.checked_add(fraction))
            .map(Self)
            .ok_or_else(|| error("too large"))
    }
}

/// The price of one token, held as an integer count of pico-dollars ($10⁻¹²) per token,
/// which is the same number as micro-dollars per million tokens.
///
/// Constructors from floats round to the nearest pico-dollar; a NaN or a negative price is
/// zero and a huge one saturates (prices may come from user input, which must not panic).
/// `Display` shows dollars per million tokens: `$2.00/M`, `$0.028/M`.
///
/// ```
/// use chatstack_middleware::cost::TokenPrice;
///
/// let price = TokenPrice::per_million(0.028);
/// assert_eq!(price, TokenPrice::per_token(2.8e-8));
/// assert_eq!(price.picos_per_token(), 28_000);
/// assert_eq!(price.to_string(), "$0.028/M");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenPrice(u64);

impl TokenPrice {
    /// Free.
    pub const ZERO: Self = Self(0);

    /// A price in US dollars per million tokens, as providers publish them.
    pub fn per_million(dollars: f64) -> Self {
        Self((dollars * 1e6).round() as u64)
    }

    /// A price in US dollars per token, as LiteLLM's JSON writes them.
    pub fn per_token(dollars: f64) -> Self {
        Self((dollars * 1e12).round() as u64)
    }

    /// A price of `picos` pico-dollars per token (= micro-dollars per million tokens).
    pub const fn from_picos_per_token(picos: u64) -> Self {
        Self(picos)
    }

    /// The price in pico-dollars per token.
    pub const fn picos_per_token(self) -> u64 {
        self.0
    }

    /// The price in dollars per million tokens, as a float for display.
    pub fn per_million_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl fmt::Display for TokenPrice {
    /// Dollars per million tokens, with two to six decimals: `$2.00/M`, `$0.275/M`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000;
        let fraction = format!("{:06}", self.0 % 1_000_000);
        let fraction = fraction.trim_end_matches('0');
        let fraction = if fraction.len() < 2 {
            &format!("{fraction:0<2}")
        } else {
            fraction
        };
        pad(f, &format!("${whole}.{fraction}/M"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_rounds_half_up_at_any_precision() {
        assert_eq!(Usd::from_nanos(1_234_567_499).to_string(), "$1.234567");
        assert_eq!(Usd::from_nanos(1_234_567_500).to_string(), "$1.234568");
        assert_eq!(format!("{:.2}", Usd::from_dollars(80)), "$80.00");
        assert_eq!(format!("{:.0}", Usd::from_nanos(2_500_000_000)), "$3");
        assert_eq!(format!("{:.9}", Usd::from_nanos(1)), "$0.000000001");
        assert_eq!(format!("{:.11}", Usd::from_nanos(1)), "$0.00000000100");
        assert_eq!(format!("{:>10.2}", Usd::from_cents(357)), "     $3.57");
        assert_eq!(format!("{:<8.1}|", Usd::from_cents(50)), "$0.5    |");
        assert_eq!(format!("{:?}", Usd::from_nanos(42)), "$0.000000042");
        assert_eq!(Usd::MAX.to_string(), "$18446744073.709552");
    }

    #[test]
    fn parses_exact_decimals() {
        assert_eq!("$5".parse::<Usd>().unwrap(), Usd::from_dollars(5));
        assert_eq!(" 0.25 ".parse::<Usd>().unwrap(), Usd::from_cents(25));
        assert_eq!("$.5".parse::<Usd>().unwrap(), Usd::from_cents(50));
        assert_eq!("3.".parse::<Usd>().unwrap(), Usd::from_dollars(3));
        assert_eq!(
            "0.000000001".parse::<Usd>().unwrap(),
            Usd::from_nanos(1),
            "a nano-dollar"
        );
        for bad in [
            "",
            "$",
            ".",
            "-1",
            "1e3",
            "1.2.3",
            "0.0000000001",
            "99999999999999",
        ] {
            assert!(bad.parse::<Usd>().is_err(), "{bad:?}");
        }
        let error = "abc".parse::<Usd>().unwrap_err();
        assert!(error.to_string().contains("`abc`"));
    }

    #[test]
    fn floats_only_at_the_edges() {
        assert_eq!(Usd::from_dollars_f64(0.1), Usd::from_cents(10));
        assert_eq!(Usd::from_dollars_f64(f64::NAN), Usd::ZERO);
        assert_eq!(Usd::from_dollars_f64(-3.0), Usd::ZERO);
        assert_eq!(Usd::from_dollars_f64(f64::INFINITY), Usd::MAX);
        assert_eq!(Usd::from_cents(150).as_dollars_f64(), 1.5);
        assert_eq!(Usd::MAX + Usd::from_nanos(1), Usd::MAX);
        assert_eq!(Usd::ZERO.saturating_sub(Usd::from_nanos(1)), Usd::ZERO);
        assert_eq!(Usd::ZERO.checked_sub(Usd::from_nanos(1)), None);
    }

    #[test]
    fn token_prices() {
        assert_eq!(TokenPrice::per_million(2.0).picos_per_token(), 2_000_000);
        assert_eq!(TokenPrice::per_token(3.125e-7).picos_per_token(), 312_500);
        assert_eq!(TokenPrice::per_million(0.275).picos_per_token(), 275_000);
        assert_eq!(TokenPrice::per_million(f64::NAN), TokenPrice::ZERO);
        assert_eq!(TokenPrice::per_million(-1.0), TokenPrice::ZERO);
        assert_eq!(TokenPrice::per_million(2.0).to_string(), "$2.00/M");
        assert_eq!(TokenPrice::per_million(0.5).to_string(), "$0.50/M");
        assert_eq!(TokenPrice::per_million(22.5).to_string(), "$22.50/M");
        assert_eq!(TokenPrice::per_million(0.275).to_string(), "$0.275/M");
        assert_eq!(TokenPrice::per_million(0.3125).to_string(), "$0.3125/M");
        assert_eq!(TokenPrice::per_million(2.0).per_million_f64(), 2.0);
    }

    #[test]
    fn scaled_rounding() {
        // 1.5 nano-dollars rounds up to 2; 1.4999 down to 1; ceil always up.
        assert_eq!(Usd::from_picos_scaled(1_500, 1_000_000), Usd::from_nanos(2));
        assert_eq!(Usd::from_picos_scaled(1_499, 1_000_000), Usd::from_nanos(1));
        #[cfg(feature = "budget")]
        assert_eq!(
            Usd::from_picos_scaled_up(1_001, 1_000_000),
            Usd::from_nanos(2)
        );
        // 85 % of $4.20.
        assert_eq!(
            Usd::from_picos_scaled(4_200_000_000_000, 850_000),
            Usd::from_cents(357)
        );
        assert_eq!(Usd::from_picos_scaled(u128::MAX, 1_000_000), Usd::MAX);
    }
}
