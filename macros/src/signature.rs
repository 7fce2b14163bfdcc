//! The signature checks every attribute shares (`#[lepus::rpc]`, `#[lepus::task]`,
//! `#[lepus::event]`, and each method of a `#[lepus::service]` trait): what can be a handler,
//! which parameters travel on the wire and which the worker injects (`State<T>`, `Context`),
//! each problem reported at its token, all of them at once.
//!
//! Injected parameters are recognised by the name of their type (`State<..>`, `Context`,
//! `&Context`); the expansion takes them through `lepus::Inject`, so a type of that name that
//! is not Lepus's own is a compile error saying so rather than silently a wire argument.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, ToTokens};
use syn::{FnArg, Ident, ItemFn, Pat, PathArguments, ReturnType, Signature, Type};

use crate::rpc::parse::Errors;

/// The entry point every function attribute (`#[lepus::rpc]`, `#[lepus::task]`,
/// `#[lepus::event]`) runs: parses `item` as a function, reads the attribute's arguments with
/// `parse_args` and checks the signature with `check`, and expands with `expand` when both
/// succeed. On errors, emits all of them, combined, followed by the function unchanged (so the
/// rest of the crate still sees it and reports no cascade of unrelated errors); an item that
/// is not a function is emitted unchanged after its parse error.
pub(crate) fn expand_function_attribute<A>(
    attr: TokenStream,
    item: TokenStream,
    parse_args: impl FnOnce(TokenStream) -> syn::Result<A>,
    check: impl FnOnce(&ItemFn) -> syn::Result<WireSignature>,
    expand: impl FnOnce(&A, &ItemFn, &WireSignature) -> TokenStream,
) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(err) => {
            let err = err.to_compile_error();
            return quote::quote! { #err #item };
        }
    };
    let args = parse_args(attr);
    let checked = check(&function);
    match (args, checked) {
        (Ok(args), Ok(signature)) => expand(&args, &function, &signature),
        (args, checked) => combined(args.err(), checked.err(), &function),
    }
}

/// [`expand_function_attribute`] for an attribute whose signature check is [`validate`] under
/// `rules` alone (`#[lepus::rpc]`, `#[lepus::task]`).
pub(crate) fn expand_validated<A>(
    attr: TokenStream,
    item: TokenStream,
    rules: &Rules<'_>,
    parse_args: impl FnOnce(TokenStream) -> syn::Result<A>,
    expand: impl FnOnce(&A, &ItemFn, &WireSignature) -> TokenStream,
) -> TokenStream {
    expand_function_attribute(
        attr,
        item,
        parse_args,
        |function| validate(&function.sig, rules),
        expand,
    )
}

/// The errors, combined, followed by the function unchanged.
fn combined(
    first: Option<syn::Error>,
    second: Option<syn::Error>,
    function: &ItemFn,
) -> TokenStream {
    let mut errors: Option<syn::Error> = None;
    for err in [first, second].into_iter().flatten() {
        match errors.as_mut() {
            Some(all) => all.combine(err),
            None => errors = Some(err),
        }
    }
    let errors = errors.map(|e| e.to_compile_error());
    quote::quote! { #errors #function }
}

/// What a handler's signature means to the attribute that reads it.
pub(crate) struct Rules<'a> {
    /// The attribute, for messages (`#[lepus::rpc]`).
    pub(crate) attribute: &'a str,
    /// The result travels back to a caller (calls): then it must be owned too.
    pub(crate) result_travels: bool,
    /// `State<T>` parameters are allowed (free functions; a service holds its state in `self`).
    pub(crate) state: bool,
    /// A `self` receiver is expected first (service methods; checked by the caller).
    pub(crate) method: bool,
}

impl<'a> Rules<'a> {
    /// The rules of an attribute on a free function (`#[lepus::rpc]`, `#[lepus::task]`,
    /// `#[lepus::event]`): `State<T>` parameters allowed, no receiver; `result_travels` for
    /// calls, whose result goes back to the caller.
    pub(crate) fn free_function(attribute: &'a str, result_travels: bool) -> Self {
        Self {
            attribute,
            result_travels,
            state: true,
            method: false,
        }
    }
}

/// The function's signature as the wire and the worker see it.
pub(crate) struct WireSignature {
    /// Wire argument names (the function's own, or `argN` for patterns) and types, in order.
    pub(crate) args: Vec<(Ident, Type)>,
    /// Every parameter, in order: how to call the function.
    pub(crate) params: Vec<Param>,
    /// The return type as written (`()` when the function returns nothing). Whether it is a
    /// `Result` is for the type system to say (`lepus::Returns`), not the macro: an alias such
    /// as `anyhow::Result<()>` looks like any other path.
    pub(crate) ret: Type,
    /// The span of the parameter list's parentheses (where argument-tuple errors point).
    pub(crate) params_span: Span,
}

/// One parameter of the function.
// A handful per handler, at compile time only: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Param {
    /// The wire argument at this index of [`WireSignature::args`].
    Wire(usize),
    /// A parameter the worker fills in.
    Injected(Injected),
}

/// A parameter the worker fills in: `State<T>` or `Context`, taken through `lepus::Inject`.
pub(crate) struct Injected {
    /// The type to inject, as written (the reference stripped for `&Context`).
    pub(crate) ty: Type,
    /// The function takes it by reference (`&Context`).
    pub(crate) by_ref: bool,
    /// The variable holding it in the generated code (mixed-site: clashes with nothing).
    pub(crate) var: Ident,
}

impl WireSignature {
    /// The injected parameters, in order.
    pub(crate) fn injected(&self) -> impl Iterator<Item = &Injected> {
        self.params.iter().filter_map(|p| match p {
            Param::Injected(injected) => Some(injected),
            Param::Wire(_) => None,
        })
    }
}

/// The tokens of an optional part of a signature, when it is there.
fn as_tokens<T: ToTokens>(part: &Option<T>) -> Option<&dyn ToTokens> {
    part.as_ref().map(|tokens| tokens as &dyn ToTokens)
}

/// Validates `sig`, reporting every problem at its token (combined).
pub(crate) fn validate(sig: &Signature, rules: &Rules<'_>) -> syn::Result<WireSignature> {
    let attribute = rules.attribute;
    let kind = if rules.method { "methods" } else { "functions" };
    let mut errors = Errors::default();
    // What the signature must not be, each reported at its tokens, in this order.
    let refused: [(Option<&dyn ToTokens>, &str); 6] = [
        (
            sig.asyncness.is_none().then_some(&sig.fn_token),
            "must be `async fn`",
        ),
        (as_tokens(&sig.constness), "cannot be `const`"),
        (as_tokens(&sig.abi), "cannot have an ABI"),
        (
            (!sig.generics.params.is_empty()).then_some(&sig.generics.params),
            "cannot be generic: the types on the wire must be concrete",
        ),
        (
            as_tokens(&sig.generics.where_clause),
            "cannot have a `where` clause",
        ),
        (as_tokens(&sig.variadic), "cannot be variadic"),
    ];
    for (tokens, refusal) in refused {
        if let Some(tokens) = tokens {
            errors.push(syn::Error::new_spanned(
                tokens,
                format!("{attribute} {kind} {refusal}"),
            ));
        }
    }
    let mut args = Vec::with_capacity(sig.inputs.len());
    let mut params = Vec::with_capacity(sig.inputs.len());
    for (index, input) in sig.inputs.iter().enumerate() {
        match input {
            // A service method's receiver is checked by the service macro.
            FnArg::Receiver(_) if rules.method => {}
            FnArg::Receiver(receiver) => errors.push(syn::Error::new_spanned(
                receiver,
                format!("{attribute} functions cannot take `self`: annotate a free function"),
            )),
            FnArg::Typed(typed) => {
                if let Some(injected) = injectable(&typed.ty, index) {
                    match injected {
                        Ok(injected) if injected.is_state() && !rules.state => {
                            errors.push(syn::Error::new_spanned(
                                &typed.ty,
                                format!(
                                    "{attribute} methods cannot take `State<..>`: an \
                                     implementation holds its state itself (`&self`)"
                                ),
                            ))
                        }
                        Ok(injected) => params.push(Param::Injected(injected)),
                        Err(err) => errors.push(err),
                    }
                    continue;
                }
                if let Some(problem) = unowned(&typed.ty, rules) {
                    errors.push(problem);
                }
                let name = match &*typed.pat {
                    Pat::Ident(ident) if ident.by_ref.is_none() && ident.subpat.is_none() => {
                        ident.ident.clone()
                    }
                    _ => format_ident!("arg{}", index, span = Span::mixed_site()),
                };
                params.push(Param::Wire(args.len()));
                args.push((name, (*typed.ty).clone()));
            }
        }
    }
    let ret = match &sig.output {
        ReturnType::Default => syn::parse_quote_spanned!(sig.paren_token.span.join()=> ()),
        ReturnType::Type(_, ty) => {
            if rules.result_travels {
                if let Some(problem) = unowned(ty, rules) {
                    errors.push(problem);
                }
            } else if let Type::ImplTrait(impl_trait) = &**ty {
                errors.push(syn::Error::new_spanned(
                    impl_trait,
                    format!("{attribute} {kind} cannot return `impl Trait`: name a concrete type"),
                ));
            }
            (**ty).clone()
        }
    };
    errors.finish()?;
    Ok(WireSignature {
        args,
        params,
        ret,
        params_span: sig.paren_token.span.join(),
    })
}

impl Injected {
    fn is_state(&self) -> bool {
        last_segment(&self.ty).is_some_and(|s| s.ident == "State")
    }
}

/// The last path segment of a path type.
fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        Type::Group(group) => last_segment(&group.elem),
        Type::Paren(paren) => last_segment(&paren.elem),
        _ => None,
    }
}

/// `Some` when `ty` names an injected parameter (`State<..>`, `Context`, `&Context`), with an
/// error for the forms that cannot be one (`&mut Context`, `&State<T>`).
fn injectable(ty: &Type, index: usize) -> Option<syn::Result<Injected>> {
    let var = format_ident!("injected{}", index, span = Span::mixed_site());
    let (inner, by_ref, mutable) = match ty {
        Type::Reference(reference) => (&*reference.elem, true, reference.mutability.is_some()),
        other => (other, false, false),
    };
    let segment = last_segment(inner)?;
    let state =
        segment.ident == "State" && matches!(segment.arguments, PathArguments::AngleBracketed(_));
    let context = segment.ident == "Context" && segment.arguments.is_empty();
    if !state && !context {
        return None;
    }
    if mutable || (by_ref && state) {
        let what = if state {
            "`State<T>` (owned: each request gets its clone)"
        } else {
            "`Context` or `&Context`"
        };
        return Some(Err(syn::Error::new_spanned(
            ty,
            format!("an injected parameter is taken as {what}"),
        )));
    }
    Some(Ok(Injected {
        ty: inner.clone(),
        by_ref,
        var,
    }))
}

/// An error when `ty` cannot travel by value (a reference or an `impl Trait`).
fn unowned(ty: &Type, rules: &Rules<'_>) -> Option<syn::Error> {
    let attribute = rules.attribute;
    let what = if rules.result_travels {
        "arguments and results"
    } else {
        "arguments"
    };
    match ty {
        Type::Reference(reference) => Some(syn::Error::new_spanned(
            reference,
            format!(
                "{attribute} {what} must be owned types (they are decoded from a message); use \
                 e.g. `String` instead of `&str`"
            ),
        )),
        Type::ImplTrait(impl_trait) => Some(syn::Error::new_spanned(
            impl_trait,
            format!("{attribute} {what} cannot be `impl Trait`: name a concrete type"),
        )),
        Type::Paren(inner) => unowned(&inner.elem, rules),
        Type::Group(inner) => unowned(&inner.elem, rules),
        _ => None,
    }
}
