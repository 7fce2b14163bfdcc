//! `#[lepus::event]`: parse -> validate -> expand (attribute reading and signature checks are
//! shared with `#[lepus::task]`).

mod expand;
mod parse;

use proc_macro2::TokenStream;

use crate::signature::{self, Rules};

/// The attribute's entry point (see [`crate::signature::expand_function_attribute`]: on
/// errors, emits them together with the function unchanged).
pub(crate) fn event(attr: TokenStream, item: TokenStream) -> TokenStream {
    let rules = Rules::free_function("#[lepus::event]", false);
    let check = |function: &syn::ItemFn| {
        signature::validate(&function.sig, &rules).and_then(|signature| {
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
        })
    };
    signature::expand_function_attribute(attr, item, parse::parse_args, check, expand::expand)
}
