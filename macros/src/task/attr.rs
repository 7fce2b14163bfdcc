//! Reading `key = value` attribute arguments for `#[lepus::task]` and `#[lepus::event]`:
//! string, integer, boolean, duration (`"250ms"`, `"30s"`, `"5m"`, `"1h"`) and string-list
//! values, each problem reported at its token.

use std::time::Duration;

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprArray, ExprLit, Lit, LitBool, LitInt, LitStr, Meta, Path, Token};

use crate::rpc::parse::{check_short_string, Errors};

/// One `key = value` pair.
pub(crate) struct Pair {
    /// The key as written (for error spans).
    pub(crate) path: Path,
    /// The key's name.
    pub(crate) key: String,
    /// The value expression.
    pub(crate) value: Expr,
}

impl Pair {
    /// The pair `meta` is; `None` when it is not `key = value` (a bare path or a list), with
    /// `expected` (the attribute's own words for what it takes) reported at it. A key that is
    /// not an identifier has the name `""`, which no attribute allows.
    pub(crate) fn of(meta: Meta, expected: &str, errors: &mut Errors) -> Option<Pair> {
        let Meta::NameValue(pair) = meta else {
            errors.push(syn::Error::new_spanned(&meta, expected));
            return None;
        };
        let key = pair
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        Some(Pair {
            path: pair.path,
            key,
            value: pair.value,
        })
    }
}

/// Splits the attribute into pairs; unknown keys, duplicates and non-pairs are errors.
pub(crate) fn pairs(
    attr: TokenStream,
    attribute: &str,
    allowed: &[&str],
    errors: &mut Errors,
) -> syn::Result<Vec<Pair>> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    let mut out: Vec<Pair> = Vec::new();
    let expected = format!(
        "expected `key = value`; {attribute} takes {}",
        list(allowed)
    );
    for meta in metas {
        let Some(pair) = Pair::of(meta, &expected, errors) else {
            continue;
        };
        if !allowed.contains(&pair.key.as_str()) {
            errors.push(syn::Error::new_spanned(
                &pair.path,
                format!("unknown {attribute} key; expected one of {}", list(allowed)),
            ));
            continue;
        }
        if out.iter().any(|p| p.key == pair.key) {
            errors.push(syn::Error::new_spanned(
                &pair.path,
                format!("duplicate `{}`", pair.key),
            ));
            continue;
        }
        out.push(pair);
    }
    Ok(out)
}

fn list(allowed: &[&str]) -> String {
    allowed
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A non-empty string literal of at most 255 bytes (an AMQP short string).
pub(crate) fn short_string(pair: &Pair) -> syn::Result<LitStr> {
    match &pair.value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(value),
            ..
        }) => {
            check_short_string(value, &pair.key)?;
            Ok(value.clone())
        }
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{}` must be a string literal", pair.key),
        )),
    }
}

/// A string literal (may be empty: a routing key).
pub(crate) fn any_string(value: &Expr, key: &str) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(value),
            ..
        }) => Ok(value.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{key}` must be a string literal or an array of them"),
        )),
    }
}

/// `"key"` or `["a", "b"]`.
pub(crate) fn string_list(pair: &Pair) -> syn::Result<Vec<LitStr>> {
    match &pair.value {
        Expr::Array(ExprArray { elems, .. }) => {
            elems.iter().map(|e| any_string(e, &pair.key)).collect()
        }
        other => Ok(vec![any_string(other, &pair.key)?]),
    }
}

/// An integer literal that fits `T`.
pub(crate) fn int<T>(pair: &Pair) -> syn::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match &pair.value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(value),
            ..
        }) => int_value(value, &pair.key),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{}` must be an integer literal", pair.key),
        )),
    }
}

fn int_value<T>(value: &LitInt, key: &str) -> syn::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value
        .base10_parse::<T>()
        .map_err(|e| syn::Error::new_spanned(value, format!("`{key}`: {e}")))
}

/// A boolean literal.
pub(crate) fn boolean(pair: &Pair) -> syn::Result<bool> {
    match &pair.value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(LitBool { value, .. }),
            ..
        }) => Ok(*value),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{}` must be `true` or `false`", pair.key),
        )),
    }
}

/// A duration string: `"250ms"`, `"30s"`, `"5m"`, `"1h"`.
pub(crate) fn duration(pair: &Pair) -> syn::Result<Duration> {
    let lit = short_string(pair)?;
    parse_duration(&lit.value()).ok_or_else(|| {
        syn::Error::new_spanned(
            &lit,
            format!(
                "`{}` must be a duration such as \"250ms\", \"30s\", \"5m\" or \"1h\"",
                pair.key
            ),
        )
    })
}

/// A positive duration string (a time limit).
pub(crate) fn positive_duration(pair: &Pair) -> syn::Result<Duration> {
    let limit = duration(pair)?;
    if limit.is_zero() {
        return Err(syn::Error::new_spanned(
            &pair.value,
            format!("`{}` must be positive", pair.key),
        ));
    }
    Ok(limit)
}

/// The builder calls a generated `handler()` makes for the `blocking` and `time_limit` keys
/// (`::lepus::Handler::blocking`, `::lepus::Handler::time_limit`).
pub(crate) fn handler_limits(blocking: bool, time_limit: Option<Duration>) -> TokenStream {
    let mut chain = TokenStream::new();
    if blocking {
        chain.extend(quote::quote! { .blocking(true) });
    }
    if let Some(limit) = time_limit {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        chain.extend(quote::quote! {
            .time_limit(::lepus::__private::Duration::from_millis(#ms))
        });
    }
    chain
}

/// `"100ms..10s"`: the first retry delay and the cap.
pub(crate) fn duration_range(pair: &Pair) -> syn::Result<(Duration, Duration)> {
    let lit = short_string(pair)?;
    let bad = || {
        syn::Error::new_spanned(
            &lit,
            "`backoff` must be \"<first delay>..<max delay>\", e.g. \"1s..5m\" (the first retry \
             waits up to the first delay, doubling up to the max)",
        )
    };
    let text = lit.value();
    let (first, max) = text.split_once("..").ok_or_else(bad)?;
    let first = parse_duration(first.trim()).ok_or_else(bad)?;
    let max = parse_duration(max.trim()).ok_or_else(bad)?;
    if first.is_zero() || max < first {
        return Err(syn::Error::new_spanned(
            &lit,
            "`backoff`: the first delay must be positive and not above the max",
        ));
    }
    Ok((first, max))
}

/// Parses `<digits><unit>` with unit `ms`, `s`, `m` or `h`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// A rate limit, `"<count>/<s|m|h>"` (Celery's notation): `(count, period in seconds)`.
pub(crate) fn rate_limit(pair: &Pair) -> syn::Result<(u32, u64)> {
    let lit = short_string(pair)?;
    let text = lit.value();
    let parsed = text.split_once('/').and_then(|(count, unit)| {
        let count: u32 = count.trim().parse().ok().filter(|n| *n > 0)?;
        let secs = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return None,
        };
        Some((count, secs))
    });
    parsed.ok_or_else(|| {
        syn::Error::new_spanned(
            &lit,
            "`rate_limit` must be \"<count>/<s|m|h>\" with a positive count, e.g. \"20/s\" \
             (per worker)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(parse_duration("1.5s"), None);
    }
}
