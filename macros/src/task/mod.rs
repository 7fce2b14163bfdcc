//! `#[lepus::task]`: parse -> validate (`crate::signature`) -> expand. `attr` is shared with
//! `#[lepus::event]` and `#[lepus::service]`.

pub(crate) mod attr;
mod expand;
mod parse;

use proc_macro2::TokenStream;

/// The attribute's entry point (see [`crate::signature::expand_function_attribute`]: on
/// errors, emits them together with the function unchanged).
pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let rules = crate::signature::Rules {
        attribute: "#[lepus::task]",
        result_travels: false,
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
