//! Reads `#[lepus::rpc(queue = "...", name = "...", time_limit = "5s", blocking = true)]`, and
//! [`QueueName`], the `queue = ` value all three attributes share.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token};

use crate::task::attr;

/// The attribute's arguments.
pub(crate) struct RpcArgs {
    /// The queue the method is served on.
    pub(crate) queue: QueueName,
    /// The method name, when given.
    pub(crate) name: Option<LitStr>,
    /// The handler's own time limit, when given.
    pub(crate) time_limit: Option<std::time::Duration>,
    /// Run the handler on the blocking pool.
    pub(crate) blocking: bool,
}

/// The value of `queue = `: a string literal (checked here), or any constant expression of type
/// `&'static str` (a `const`, `concat!(..)`, ...: checked at compile time by an assertion the
/// expansion emits, see [`QueueName::check`]).
pub(crate) enum QueueName {
    Lit(LitStr),
    Expr(Box<Expr>),
}

impl QueueName {
    /// Reads `queue = <value>`: a literal is checked now; another expression later.
    pub(crate) fn parse(value: &Expr, key: &str) -> syn::Result<QueueName> {
        match value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => {
                check_short_string(lit, key)?;
                Ok(QueueName::Lit(lit.clone()))
            }
            Expr::Lit(other) => Err(syn::Error::new_spanned(
                other,
                format!("`{key}` must be a string: a literal or a `&'static str` constant"),
            )),
            other => Ok(QueueName::Expr(Box::new(other.clone()))),
        }
    }

    /// The text for generated docs.
    pub(crate) fn describe(&self) -> String {
        match self {
            QueueName::Lit(lit) => lit.value(),
            QueueName::Expr(expr) => format!("`{}`", expr.to_token_stream()),
        }
    }

    /// For an expression, a compile-time check that `path` (the generated constant holding it)
    /// is a valid queue name; nothing for a literal (checked by the macro already).
    pub(crate) fn check(&self, path: TokenStream) -> TokenStream {
        match self {
            QueueName::Lit(_) => TokenStream::new(),
            QueueName::Expr(expr) => {
                let span = syn::spanned::Spanned::span(&**expr);
                quote::quote_spanned! {span=>
                    const _: () = ::core::assert!(
                        !#path.is_empty() && #path.len() <= 255,
                        "`queue` must be a non-empty AMQP short string (at most 255 bytes)",
                    );
                }
            }
        }
    }
}

impl ToTokens for QueueName {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            QueueName::Lit(lit) => lit.to_tokens(tokens),
            QueueName::Expr(expr) => tokens.extend(quote!(#expr)),
        }
    }
}

/// A non-empty string of at most 255 bytes (an AMQP short string).
pub(crate) fn check_short_string(value: &LitStr, key: &str) -> syn::Result<()> {
    if value.value().is_empty() {
        return Err(syn::Error::new_spanned(
            value,
            format!("`{key}` must not be empty"),
        ));
    }
    if value.value().len() > 255 {
        return Err(syn::Error::new_spanned(
            value,
            format!("`{key}` must be at most 255 bytes (an AMQP short string)"),
        ));
    }
    Ok(())
}

/// Parses the attribute, reporting every problem at its token (combined).
pub(crate) fn parse_args(attr: TokenStream) -> syn::Result<RpcArgs> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    let mut queue: Option<QueueName> = None;
    let mut name: Option<LitStr> = None;
    let mut time_limit = None;
    let mut blocking = None;
    // The limit keys written so far, valid or not (to report duplicates).
    let mut limit_keys: Vec<String> = Vec::new();
    let mut errors = Errors::default();
    // A `queue` key was written, even if its value was rejected (no "missing" error then).
    let mut queue_written = false;
    for meta in metas {
        if meta.path().is_ident("queue") {
            queue_written = true;
        }
        let expected = "expected `key = \"value\"`; #[lepus::rpc] takes `queue = \"...\"` and \
                        `name = \"...\"`";
        let Some(pair) = attr::Pair::of(meta, expected, &mut errors) else {
            continue;
        };
        let key = pair.key.clone();
        if key == "time_limit" || key == "blocking" {
            let written = limit_keys.contains(&key);
            limit_keys.push(key);
            let parsed = if written {
                Err(syn::Error::new_spanned(
                    &pair.path,
                    format!("duplicate `{}`", pair.key),
                ))
            } else if pair.key == "blocking" {
                attr::boolean(&pair).map(|v| blocking = Some(v))
            } else {
                attr::positive_duration(&pair).map(|v| time_limit = Some(v))
            };
            if let Err(err) = parsed {
                errors.push(err);
            }
            continue;
        }
        match key.as_str() {
            "queue" | "name" => {}
            _ => {
                errors.push(syn::Error::new_spanned(
                    &pair.path,
                    "unknown #[lepus::rpc] key; expected `queue`, `name`, `time_limit` or \
                     `blocking`",
                ));
                continue;
            }
        }
        let duplicate = match key.as_str() {
            "queue" => queue.is_some(),
            _ => name.is_some(),
        };
        if key == "queue" {
            match QueueName::parse(&pair.value, "queue") {
                Ok(value) if !duplicate => queue = Some(value),
                Ok(_) => errors.push(syn::Error::new_spanned(&pair.path, "duplicate `queue`")),
                Err(err) => errors.push(err),
            }
            continue;
        }
        let value = match attr::short_string(&pair) {
            Ok(value) => value,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        if duplicate {
            errors.push(syn::Error::new_spanned(
                &pair.path,
                format!("duplicate `{key}`"),
            ));
            continue;
        }
        name = Some(value);
    }
    if !queue_written {
        errors.push(syn::Error::new(
            Span::call_site(),
            "missing `queue = \"...\"`: #[lepus::rpc] needs the queue to serve the function on",
        ));
    }
    errors.finish()?;
    match queue {
        Some(queue) => Ok(RpcArgs {
            queue,
            name,
            time_limit,
            blocking: blocking.unwrap_or(false),
        }),
        None => Err(syn::Error::new(Span::call_site(), "missing `queue`")),
    }
}

/// Accumulates errors so that all of them are reported at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, err: syn::Error) {
        match self.0.as_mut() {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
