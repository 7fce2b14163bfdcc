//! `#[lepus::service]`: parse (`service/parse`: the attribute, the trait and its methods) ->
//! validate (each method through `crate::signature`, then what a contract cannot hold) ->
//! expand (`service/expand`, one generator function per emitted item).

mod expand;
mod parse;

use proc_macro2::TokenStream;

/// The attribute's entry point. On errors, emits them together with the trait unchanged but
/// for its `#[lepus(..)]` attributes (so the rest of the crate still sees the trait and reports
/// no cascade of unrelated errors).
pub(crate) fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut contract: syn::ItemTrait = match syn::parse2(item.clone()) {
        Ok(contract) => contract,
        Err(err) => {
            let err = syn::Error::new(
                err.span(),
                "#[lepus::service] goes on a trait: the contract of the service, its methods \
                 `async fn name(&self, args..) -> Result<T, E>;`",
            )
            .to_compile_error();
            return quote::quote! { #err #item };
        }
    };
    let args = parse::parse_args(attr);
    let methods = parse::methods(&mut contract);
    match (args, methods) {
        (Ok(args), Ok(methods)) => expand::expand(&args, &contract, &methods),
        (args, methods) => {
            let mut errors = crate::rpc::parse::Errors::default();
            for err in [args.err(), methods.err()].into_iter().flatten() {
                errors.push(err);
            }
            let errors = errors.finish().err().map(|e| e.to_compile_error());
            quote::quote! { #errors #contract }
        }
    }
}
