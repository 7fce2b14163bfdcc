//! `#[lepus::rpc]`: parse -> validate -> expand.

pub(crate) mod expand;
pub(crate) mod parse;

use proc_macro2::TokenStream;

/// The attribute's entry point. On errors, emits them together with the function unchanged
/// (so the rest of the crate still sees `fn fib` and reports no cascade of unrelated errors).
pub(crate) fn rpc(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(err) => {
            let err = err.to_compile_error();
            return quote::quote! { #err #item };
        }
    };
    let args = parse::parse_args(attr);
    let checked = crate::signature::validate(
        &function.sig,
        &crate::signature::Rules {
            attribute: "#[lepus::rpc]",
            result_travels: true,
            state: true,
            method: false,
        },
    );
    match (args, checked) {
        (Ok(args), Ok(signature)) => expand::expand(&args, &function, &signature),
        (args, checked) => crate::task::combined(args.err(), checked.err(), &function),
    }
}
