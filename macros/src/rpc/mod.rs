//! `#[lepus::rpc]`: parse -> validate -> expand.

pub(crate) mod expand;
pub(crate) mod parse;
pub(crate) mod validate;

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
    let checked = validate::validate(&function);
    match (args, checked) {
        (Ok(args), Ok(signature)) => expand::expand(&args, &function, &signature),
        (args, checked) => {
            let mut errors: Option<syn::Error> = None;
            for err in [args.err(), checked.err()].into_iter().flatten() {
                match errors.as_mut() {
                    Some(all) => all.combine(err),
                    None => errors = Some(err),
                }
            }
            let errors = errors.map(|e| e.to_compile_error());
            quote::quote! { #errors #function }
        }
    }
}
