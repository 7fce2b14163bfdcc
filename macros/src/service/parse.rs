//! Reads `#[lepus::service(queue = "...", time_limit = "5s", blocking = true)]` and the trait:
//! each method is checked like a `#[lepus::rpc]` function (`crate::signature`), then for what a
//! contract cannot hold (a body, a receiver other than `&self`, two methods of one name, items
//! that are not methods). A method's own `#[lepus(name = "...", time_limit = "...", blocking =
//! ...)]` sets its wire name and overrides the service's limits for it.

use std::collections::HashMap;
use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::{Attribute, FnArg, ItemTrait, LitStr, TraitItem, TraitItemFn};

use crate::rpc::parse::{Errors, QueueName};
use crate::signature::{self, Rules, WireSignature};
use crate::task::attr;

/// The attribute's arguments.
pub(crate) struct ServiceArgs {
    /// The queue the service is served on.
    pub(crate) queue: QueueName,
    /// The limits of every method that does not set its own.
    pub(crate) limits: Limits,
}

/// A handler's limits, as `#[lepus::rpc]`'s `time_limit` and `blocking` keys set them.
#[derive(Clone, Copy, Default)]
pub(crate) struct Limits {
    /// Stop the handler after this long.
    pub(crate) time_limit: Option<Duration>,
    /// Run the handler on tokio's blocking pool.
    pub(crate) blocking: Option<bool>,
}

impl Limits {
    /// Reads a `time_limit` or `blocking` pair; false for other keys.
    fn read(&mut self, pair: &attr::Pair, errors: &mut Errors) -> bool {
        let parsed = match pair.key.as_str() {
            "time_limit" => attr::positive_duration(pair).map(|v| self.time_limit = Some(v)),
            "blocking" => attr::boolean(pair).map(|v| self.blocking = Some(v)),
            _ => return false,
        };
        if let Err(err) = parsed {
            errors.push(err);
        }
        true
    }

    /// These limits, each falling back to `defaults`'.
    pub(crate) fn or(self, defaults: Limits) -> Limits {
        Limits {
            time_limit: self.time_limit.or(defaults.time_limit),
            blocking: self.blocking.or(defaults.blocking),
        }
    }
}

/// One method of the contract, checked.
pub(crate) struct ContractMethod {
    /// The method as written (without its `#[lepus(..)]` attributes).
    pub(crate) item: TraitItemFn,
    /// The method name on the wire (the `type` of its requests): its own, or `#[lepus(name)]`.
    pub(crate) wire_name: LitStr,
    /// Its parameters and result as the wire and the worker see them.
    pub(crate) signature: WireSignature,
    /// Its own limits (`#[lepus(time_limit, blocking)]`), before the service's defaults.
    pub(crate) limits: Limits,
}

/// The names the generated client gives its own items; a method cannot take them.
const RESERVED: &[&str] = &["new", "with_options", "client", "QUEUE"];

/// Parses the attribute, reporting every problem at its token (combined).
pub(crate) fn parse_args(args: TokenStream) -> syn::Result<ServiceArgs> {
    let mut errors = Errors::default();
    let pairs = attr::pairs(
        args,
        "#[lepus::service]",
        &["queue", "time_limit", "blocking"],
        &mut errors,
    )?;
    let mut queue = None;
    let mut limits = Limits::default();
    for pair in &pairs {
        if limits.read(pair, &mut errors) {
            continue;
        }
        match QueueName::parse(&pair.value, "queue") {
            Ok(value) => queue = Some(value),
            Err(err) => errors.push(err),
        }
    }
    if !pairs.iter().any(|pair| pair.key == "queue") {
        errors.push(syn::Error::new(
            Span::call_site(),
            "missing `queue = \"...\"`: #[lepus::service] needs the queue to serve the service on",
        ));
    }
    errors.finish()?;
    match queue {
        Some(queue) => Ok(ServiceArgs { queue, limits }),
        None => Err(syn::Error::new(Span::call_site(), "missing `queue`")),
    }
}

/// Checks the trait and its methods; strips the `#[lepus(..)]` attributes from `contract` (they
/// are the macro's, not the compiler's).
pub(crate) fn methods(contract: &mut ItemTrait) -> syn::Result<Vec<ContractMethod>> {
    let mut errors = Errors::default();
    if !contract.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &contract.generics.params,
            "#[lepus::service] traits cannot be generic: the types on the wire must be concrete",
        ));
    }
    if let Some(where_clause) = &contract.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            "#[lepus::service] traits cannot have a `where` clause",
        ));
    }
    if let Some(unsafety) = &contract.unsafety {
        errors.push(syn::Error::new_spanned(
            unsafety,
            "#[lepus::service] traits cannot be `unsafe`",
        ));
    }
    if let Some(auto) = &contract.auto_token {
        errors.push(syn::Error::new_spanned(
            auto,
            "#[lepus::service] traits cannot be `auto`",
        ));
    }
    let mut methods = Vec::new();
    // Wire name -> the first method's name, for the duplicate error.
    let mut seen: HashMap<String, syn::Ident> = HashMap::new();
    for item in &mut contract.items {
        let TraitItem::Fn(method) = item else {
            errors.push(syn::Error::new_spanned(
                &*item,
                "#[lepus::service] traits hold only `async fn` methods: the calls of the service \
                 (constants, types and macros belong outside the contract)",
            ));
            continue;
        };
        let (wire_name, limits) = match take_method_attrs(&mut method.attrs) {
            Ok(read) => read,
            Err(err) => {
                errors.push(err);
                (None, Limits::default())
            }
        };
        let wire_name = wire_name.unwrap_or_else(|| {
            let plain = method.sig.ident.to_string();
            LitStr::new(plain.trim_start_matches("r#"), method.sig.ident.span())
        });
        match check(method, &wire_name, &mut seen) {
            Ok(signature) => methods.push(ContractMethod {
                item: method.clone(),
                wire_name,
                signature,
                limits,
            }),
            Err(err) => errors.push(err),
        }
    }
    if contract.items.is_empty() {
        errors.push(syn::Error::new_spanned(
            &contract.ident,
            "a #[lepus::service] trait needs at least one method",
        ));
    }
    errors.finish()?;
    Ok(methods)
}

/// Checks one method: its signature as an RPC's, then what a contract method must be.
fn check(
    method: &TraitItemFn,
    wire_name: &LitStr,
    seen: &mut HashMap<String, syn::Ident>,
) -> syn::Result<WireSignature> {
    let mut errors = Errors::default();
    let sig = &method.sig;
    let signature = signature::validate(
        sig,
        &Rules {
            attribute: "#[lepus::service]",
            result_travels: true,
            state: false,
            method: true,
        },
    );
    if let Err(err) = &signature {
        errors.push(err.clone());
    }
    if let Some(body) = &method.default {
        errors.push(syn::Error::new_spanned(
            body,
            format!(
                "a #[lepus::service] contract has no method bodies: implement `{}` in an `impl` \
                 of the trait (a caller compiles the contract alone, without any implementation)",
                sig.ident
            ),
        ));
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(receiver)) => {
            if receiver.colon_token.is_some() || receiver.reference.is_none() {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    "#[lepus::service] methods take `&self`: one implementation serves every \
                     request, shared",
                ));
            } else if receiver.mutability.is_some() {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    "#[lepus::service] methods take `&self`, not `&mut self`: one implementation \
                     serves many requests at once (keep what changes behind a lock, or in a pool)",
                ));
            }
        }
        _ => errors.push(syn::Error::new_spanned(
            &sig.ident,
            format!(
                "#[lepus::service] methods take `&self` first: `async fn {}(&self, ..)` (the \
                 implementation serving the request)",
                sig.ident
            ),
        )),
    }
    if RESERVED.contains(&sig.ident.to_string().as_str()) {
        errors.push(syn::Error::new_spanned(
            &sig.ident,
            format!(
                "a method named `{}` would clash with the generated client's own `{}`: rename it \
                 (`#[lepus(name = \"{}\")]` keeps its name on the wire)",
                sig.ident, sig.ident, sig.ident
            ),
        ));
    }
    match seen.get(&wire_name.value()) {
        Some(first) => errors.push(syn::Error::new(
            wire_name.span(),
            format!(
                "two methods named `{}` in one service (the first is `{}`): requests are routed \
                 by method name",
                wire_name.value(),
                first
            ),
        )),
        None => {
            seen.insert(wire_name.value(), sig.ident.clone());
        }
    }
    errors.finish()?;
    signature
}

/// Removes the method's `#[lepus(..)]` attributes and returns the name and limits they give.
fn take_method_attrs(attrs: &mut Vec<Attribute>) -> syn::Result<(Option<LitStr>, Limits)> {
    const KEYS: &[&str] = &["name", "time_limit", "blocking"];
    let mut name = None;
    let mut limits = Limits::default();
    let mut written: Vec<String> = Vec::new();
    let mut errors = Errors::default();
    let mut kept = Vec::with_capacity(attrs.len());
    for attribute in attrs.drain(..) {
        if !attribute.path().is_ident("lepus") {
            kept.push(attribute);
            continue;
        }
        let tokens = match attribute.parse_args::<TokenStream>() {
            Ok(tokens) => tokens,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        let pairs = match attr::pairs(tokens, "#[lepus(..)]", KEYS, &mut errors) {
            Ok(pairs) => pairs,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        for pair in pairs {
            // `attr::pairs` catches a key written twice in one attribute; this, across two.
            if written.contains(&pair.key) {
                errors.push(syn::Error::new_spanned(
                    &pair.path,
                    format!("duplicate `{}`", pair.key),
                ));
                continue;
            }
            written.push(pair.key.clone());
            if limits.read(&pair, &mut errors) {
                continue;
            }
            match attr::short_string(&pair) {
                Ok(value) => name = Some(value),
                Err(err) => errors.push(err),
            }
        }
    }
    *attrs = kept;
    errors.finish()?;
    Ok((name, limits))
}
