//! Helpers for tolerant decoding: string enums with an `Other` arm, and fields that real
//! servers send as `null`, `""` or the wrong JSON type.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Declares a string enum that serializes to its wire name and decodes any unknown string
/// into `Other(String)`, so a provider's new value never fails a whole response.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this version of chatstack does not know, kept as sent.
            Other(String),
        }

        impl $name {
            /// The value as it appears on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )*
                    Self::Other(other) => other.as_str(),
                }
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                match value {
                    $( $wire => Self::$variant, )*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Ok(Self::from(value.as_ref()))
            }
        }
    };
}
pub(crate) use string_enum;

/// Decodes an optional value, turning `null` into `None` and a value of the wrong shape into
/// `None` as well. Used for fields where servers are known to send junk.
///
/// It buffers the value as a `serde_json::Value` first, so it parses twice: the per-chunk
/// fields use [`lenient_text`] and [`lenient_struct`] instead, which decode in one pass.
pub(crate) fn lenient_option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}

/// Decodes a string field that may be `null`, or a number (llama.cpp sends integer codes),
/// into an optional string. `"None"` (a Python `str(None)` leaking through LiteLLM) becomes
/// `None` too.
pub(crate) fn string_or_number<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(serde_json::Value::String(s)) if s != "None" => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    })
}

/// Decodes a `u64` counter that may be `null`, missing, negative or fractional; anything
/// that is not a non-negative number counts as zero.
pub(crate) fn lenient_u64<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .unwrap_or(0),
        _ => 0,
    })
}

/// Decodes a sequence that may be `null` or missing into an empty `Vec`.
pub(crate) fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Decodes a string-valued field (text, or a string enum) in one pass: a string becomes
/// `Some`, while `null` and a value of any other JSON type become `None`, skipped in place.
pub(crate) fn lenient_text<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: for<'a> From<&'a str>,
{
    deserializer.deserialize_any(Lenient::<Text<T>>(PhantomData))
}

/// Decodes an object-valued field in one pass: an object decodes as `T`, while `null` and a
/// value of any other JSON type give `T::default()`, skipped in place. Errors inside the
/// object are `T`'s own, so its fields should be lenient themselves.
pub(crate) fn lenient_struct<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    deserializer.deserialize_any(Lenient::<Object<T>>(PhantomData))
}

/// The JSON shape a lenient field takes, and its value for every other shape.
trait Shape<'de> {
    /// The decoded value.
    type Value;

    /// The value for `null` and for a JSON type the field does not take.
    fn fallback() -> Self::Value;

    /// Decodes a string; by default strings are not taken.
    fn text(_: &str) -> Self::Value {
        Self::fallback()
    }

    /// Decodes an object; by default objects are skipped.
    fn object<A: MapAccess<'de>>(mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::fallback())
    }
}

/// A string field: [`lenient_text`].
struct Text<T>(PhantomData<T>);

impl<'de, T: for<'a> From<&'a str>> Shape<'de> for Text<T> {
    type Value = Option<T>;

    fn fallback() -> Option<T> {
        None
    }

    fn text(text: &str) -> Option<T> {
        Some(T::from(text))
    }
}

/// An object field: [`lenient_struct`].
struct Object<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de> + Default> Shape<'de> for Object<T> {
    type Value = T;

    fn fallback() -> T {
        T::default()
    }

    fn object<A: MapAccess<'de>>(map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// Visits any JSON value, takes the shape `S` wants and skips the rest.
struct Lenient<S>(PhantomData<S>);

impl<'de, S: Shape<'de>> Visitor<'de> for Lenient<S> {
    type Value = S::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<S::Value, E> {
        Ok(S::text(text))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<S::Value, A::Error> {
        S::object(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<S::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(S::fallback())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<S::Value, E> {
        Ok(S::fallback())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<S::Value, E> {
        Ok(S::fallback())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<S::Value, E> {
        Ok(S::fallback())
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<S::Value, E> {
        Ok(S::fallback())
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<S::Value, E> {
        Ok(S::fallback())
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<S::Value, E> {
        Ok(S::fallback())
    }
}

#[cfg(test)]
mod tests {
    use crate::{ChatChunk, FinishReason, Role};

    fn chunk(delta: &str) -> ChatChunk {
        let body = format!(
            r#"{{"id":"c","choices":[{{"index":1,"delta":{delta},"finish_reason":"stop"}}],"model":"m"}}"#
        );
        serde_json::from_str(&body).unwrap()
    }

    #[test]
    fn text_fields_of_the_wrong_type_are_skipped_in_place() {
        for junk in [
            "7",
            "true",
            "1.5",
            "[1,[2,{\"a\":3}]]",
            "{\"text\":\"x\",\"n\":[1]}",
            "null",
        ] {
            let decoded = chunk(&format!(
                r#"{{"role":{junk},"content":{junk},"refusal":"no"}}"#
            ));
            let choice = &decoded.choices[0];
            assert_eq!(choice.delta.role, None, "{junk}");
            assert_eq!(choice.delta.content, None, "{junk}");
            // What follows the skipped value is still read.
            assert_eq!(choice.delta.refusal.as_deref(), Some("no"), "{junk}");
            assert_eq!(choice.index, 1);
            assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
            assert_eq!(decoded.model, "m");
        }
    }

    #[test]
    fn text_keeps_escapes_and_string_enums_keep_unknown_values() {
        let decoded = chunk(r#"{"role":"critic","content":"a\"b\\n\u00e9\n"}"#);
        let delta = &decoded.choices[0].delta;
        assert_eq!(delta.role, Some(Role::Other("critic".into())));
        assert_eq!(delta.content.as_deref(), Some("a\"b\\né\n"));
    }

    #[test]
    fn a_delta_that_is_not_an_object_is_empty_and_the_choice_survives() {
        for junk in ["null", "\"text\"", "[{\"content\":\"x\"}]", "3"] {
            let decoded = chunk(junk);
            assert_eq!(decoded.choices[0].delta, Default::default(), "{junk}");
            assert_eq!(decoded.choices[0].index, 1, "{junk}");
            assert_eq!(
                decoded.choices[0].finish_reason,
                Some(FinishReason::Stop),
                "{junk}"
            );
        }
    }
}
