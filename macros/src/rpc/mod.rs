//! `#[lepus::rpc]`: parse -> validate -> expand.

pub(crate) mod expand;
pub(crate) mod parse;

use proc_macro2::TokenStream;

/// The attribute's entry point (see [`crate::signature::expand_function_attribute`]: on
/// errors, emits them together with the function unchanged).
pub(crate) fn rpc(attr: TokenStream, item: TokenStream) -> TokenStream {
    let rules = crate::signature::Rules::free_function("#[lepus::rpc]", true);
    crate::signature::expand_validated(attr, item, &rules, parse::parse_args, expand::expand)
}
