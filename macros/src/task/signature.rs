//! Checks that the annotated item can be a task or an event handler, and reads its wire
//! signature (the same rules as `#[lepus::rpc]`, with the attribute's own name in messages).

use proc_macro2::Span;
use quote::format_ident;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

use crate::rpc::parse::Errors;
use crate::rpc::validate::WireSignature;

/// Validates `function` for `attribute` (`#[lepus::task]`), reporting every problem at its
/// token (combined).
pub(crate) fn validate(function: &ItemFn, attribute: &str) -> syn::Result<WireSignature> {
    let sig = &function.sig;
    let mut errors = Errors::default();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!("{attribute} functions must be `async fn`"),
        ));
    }
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            format!("{attribute} functions cannot be `const`"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            format!(
                "{attribute} functions cannot be generic: the types on the wire must be concrete"
            ),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            format!("{attribute} functions cannot be variadic"),
        ));
    }
    let mut args = Vec::with_capacity(sig.inputs.len());
    for (index, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(receiver) => errors.push(syn::Error::new_spanned(
                receiver,
                format!("{attribute} functions cannot take `self`: annotate a free function"),
            )),
            FnArg::Typed(typed) => {
                if let Some(problem) = unowned(&typed.ty, attribute) {
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
            if let Type::ImplTrait(impl_trait) = &**ty {
                errors.push(syn::Error::new_spanned(
                    impl_trait,
                    format!(
                        "{attribute} functions cannot return `impl Trait`: name a concrete type"
                    ),
                ));
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

/// An error when `ty` cannot travel by value.
fn unowned(ty: &Type, attribute: &str) -> Option<syn::Error> {
    match ty {
        Type::Reference(reference) => Some(syn::Error::new_spanned(
            reference,
            format!(
                "{attribute} arguments must be owned types (they are decoded from a message); \
                 use e.g. `String` instead of `&str`"
            ),
        )),
        Type::ImplTrait(impl_trait) => Some(syn::Error::new_spanned(
            impl_trait,
            format!("{attribute} arguments cannot be `impl Trait`: name a concrete type"),
        )),
        Type::Paren(inner) => unowned(&inner.elem, attribute),
        Type::Group(inner) => unowned(&inner.elem, attribute),
        _ => None,
    }
}
