//! `#[lepus::event]`: parse -> validate -> expand (attribute reading and signature checks are
//! shared with `#[lepus::task]`).

mod expand;
mod parse;

use proc_macro2::TokenStream;

use crate::signature::{self, Rules};
use crate::task::combined;

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
    let rules = Rules {
        attribute: "#[lepus::event]",
        result_travels: false,
        state: true,
        method: false,
    };
    let checked = signature::validate(&function.sig, &rules).and_then(|signature| {
        const MESSAGE: &str = "#[lepus::event] functions take exactly one argument: the event \
             payload (besides injected `State<T>` and `Context` parameters)";
        match signature.args.len() {
            1 => Ok(signature),
            // No inputs to point at: point at the empty parentheses.
            0 => Err(syn::Error::new(
                function.sig.paren_token.span.join(),
                MESSAGE,
            )),
            _ => Err(syn::Error::new_spanned(&function.sig.inputs, MESSAGE)),
        }
    });
    match (args, checked) {
        (Ok(args), Ok(signature)) => expand::expand(&args, &function, &signature),
        (args, checked) => combined(args.err(), checked.err(), &function),
    }
}
