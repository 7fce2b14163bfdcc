//! `#[lepus::task]`: parse -> validate (`crate::signature`) -> expand. `attr` is shared with
//! `#[lepus::event]` and `#[lepus::service]`.

pub(crate) mod attr;
mod expand;
mod parse;

use proc_macro2::TokenStream;

/// The attribute's entry point (see [`crate::signature::expand_function_attribute`]: on
/// errors, emits them together with the function unchanged).
pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let rules = crate::signature::Rules::free_function("#[lepus::task]", false);
    crate::signature::expand_validated(attr, item, &rules, parse::parse_args, expand::expand)
}
