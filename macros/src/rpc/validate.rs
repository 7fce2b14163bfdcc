//! Checks that the annotated item can be an RPC method, and reads its wire signature.

use proc_macro2::Span;
use quote::format_ident;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use super::parse::Errors;

/// The function's signature as the RPC sees it.
pub(crate) struct WireSignature {
    /// Argument names (the function's own, or `argN` for patterns) and types, in order.
    pub(crate) args: Vec<(Ident, Type)>,
    /// The return type as written (`()` when the function returns nothing). Whether it is a
    /// `Result` is for the type system to say (`lepus::Returns`), not the macro: an alias such
    /// as `anyhow::Result<()>` looks like any other path.
    pub(crate) ret: Type,
    /// The span of the parameter list's parentheses (where argument-tuple errors point).
    pub(crate) params_span: Span,
}

/// Validates `function`, reporting every problem at its token (combined).
pub(crate) fn validate(function: &ItemFn) -> syn::Result<WireSignature> {
    let sig = &function.sig;
    let mut errors = Errors::default();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            "#[lepus::rpc] functions must be `async fn`",
        ));
    }
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            "#[lepus::rpc] functions cannot be `const`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "#[lepus::rpc] functions cannot have an ABI",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics.params,
            "#[lepus::rpc] functions cannot be generic: the types on the wire must be concrete",
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            "#[lepus::rpc] functions cannot have a `where` clause",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "#[lepus::rpc] functions cannot be variadic",
        ));
    }
    let mut args = Vec::with_capacity(sig.inputs.len());
    for (index, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(receiver) => errors.push(syn::Error::new_spanned(
                receiver,
                "#[lepus::rpc] functions cannot take `self`: annotate a free function",
            )),
            FnArg::Typed(typed) => {
                if let Some(problem) = unowned(&typed.ty) {
                    errors.push(problem);
                }
                let name = match &*typed.pat {
                    Pat::Ident(ident) if ident.by_ref.is_none() && ident.subpat.is_none() => {
                        ident.ident.clone()
                    }
                    _ => format_ident!("arg{}", index, span = Span::mixed_site()),
                };
                args.push((name, (*typed.ty).clone()));
            }
        }
    }
    let ret = match &sig.output {
        ReturnType::Default => syn::parse_quote_spanned!(sig.paren_token.span.join()=> ()),
        ReturnType::Type(_, ty) => {
            if let Some(problem) = unowned(ty) {
                errors.push(problem);
            }
            (**ty).clone()
        }
    };
    errors.finish()?;
    Ok(WireSignature {
        args,
        ret,
        params_span: sig.paren_token.span.join(),
    })
}

/// An error when `ty` cannot travel by value (a reference or an `impl Trait`).
fn unowned(ty: &Type) -> Option<syn::Error> {
    match ty {
        Type::Reference(reference) => Some(syn::Error::new_spanned(
            reference,
            "#[lepus::rpc] arguments and results must be owned types (they are decoded from a \
             message); use e.g. `String` instead of `&str`",
        )),
        Type::ImplTrait(impl_trait) => Some(syn::Error::new_spanned(
            impl_trait,
            "#[lepus::rpc] arguments and results cannot be `impl Trait`: name a concrete type",
        )),
        Type::Paren(inner) => unowned(&inner.elem),
        Type::Group(inner) => unowned(&inner.elem),
        _ => None,
    }
}
