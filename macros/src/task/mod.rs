//! `#[lepus::task]`: parse -> validate (`crate::signature`) -> expand. `attr` is shared with
//! `#[lepus::event]` and `#[lepus::service]`.

pub(crate) mod attr;
mod expand;
mod parse;

use proc_macro2::TokenStream;

/// The attribute's entry point. On errors, emits them together with the function unchanged.
pub(crate) fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
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
            attribute: "#[lepus::task]",
            result_travels: false,
            state: true,
            method: false,
        },
    );
    match (args, checked) {
        (Ok(args), Ok(signature)) => expand::expand(&args, &function, &signature),
        (args, checked) => combined(args.err(), checked.err(), &function),
    }
}

/// The errors, combined, followed by the function unchanged (so the rest of the crate still
/// sees it and reports no cascade of unrelated errors).
pub(crate) fn combined(
    first: Option<syn::Error>,
    second: Option<syn::Error>,
    function: &syn::ItemFn,
) -> TokenStream {
    let mut errors: Option<syn::Error> = None;
    for err in [first, second].into_iter().flatten() {
        match errors.as_mut() {
            Some(all) => all.combine(err),
            None => errors = Some(err),
        }
    }
    let errors = errors.map(|e| e.to_compile_error());
    quote::quote! { #errors #function }
}
