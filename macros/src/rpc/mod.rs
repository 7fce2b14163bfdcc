//! `#[lepus::rpc]`: parse -> validate -> expand.

pub(crate) mod expand;
pub(crate) mod parse;

use proc_macro2::TokenStream;

/// The attribute's entry point (see [`crate::signature::expand_function_attribute`]: on
/// errors, emits them together with the function unchanged).
pub(crate) fn rpc(attr: TokenStream, item: TokenStream) -> TokenStream {
    let rules = crate::signature::Rules {
        attribute: "#[lepus::rpc]",
        result_travels: true,
        state: true,
        method: false,
    };
    crate::signature::expand_function_attribute(
        attr,
        item,
        parse::parse_args,
        |function| crate::signature::validate(&function.sig, &rules),
        expand::expand,
    )
}
