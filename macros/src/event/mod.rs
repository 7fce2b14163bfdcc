//! `#[lepus::event]`: parse -> validate -> expand (attribute reading and signature checks are
//! shared with `#[lepus::task]`).

mod expand;
mod parse;

use proc_macro2::TokenStream;

use crate::task::{combined, signature};

/// The attribute's entry point. On errors, emits them together with the function unchanged.
pub(crate) fn event(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(err) => {
            let err = err.to_compile_error();
            return quote::quote! { #err #item };
        }
    };
    let args = parse::parse_args(attr);
    let checked = signature::validate(&function, "#[lepus::event]").and_then(|signature| {
        if signature.args.len() == 1 {
            Ok(signature)
        } else {
            Err(syn::Error::new_spanned(
                &function.sig.inputs,
                "#[lepus::event] functions take exactly one argument: the event payload",
            ))
        }
    });
    match (args, checked) {
        (Ok(args), Ok(signature)) => expand::expand(&args, &function, &signature),
        (args, checked) => combined(args.err(), checked.err(), &function),
    }
}
