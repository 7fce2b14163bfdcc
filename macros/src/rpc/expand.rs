//! Emits the items of `#[lepus::rpc]`, one generator function per item.
//!
//! For `async fn fib(n: u32) -> Result<u64, MathError>` on queue `q`:
//! ```text
//! async fn fib(n: u32) -> Result<u64, MathError> { .. }   // unchanged: callable locally
//! mod fib {                                               // same name, type namespace
//!     use super::*;                                       // the function's types resolve as written
//!     pub const QUEUE: &str = "q";
//!     pub const METHOD: &str = "fib";
//!     pub struct FibRpc;                                  // naming rule: UpperCamel(fn) + "Rpc"
//!     impl ::lepus::__private::Method for FibRpc { .. }
//!     pub async fn call(client, n: u32) -> Result<u64, ::lepus::Error<MathError>>;
//!     pub async fn call_with(client, n: u32, options: CallOptions) -> ..;
//!     pub fn handler() -> ::lepus::Handler;
//! }
//! ```
//! Every path is absolute (`::core::..`, `::lepus::__private::..`), so the output compiles
//! under `#![no_implicit_prelude]`. Generated parameter names (`client`, `options`, `args`) use
//! mixed-site hygiene and cannot clash with the function's own argument names. The items inside
//! the module are exactly as visible as the function.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::{Ident, ItemFn, LitStr, Type, Visibility};

use super::parse::RpcArgs;
use super::validate::WireSignature;

/// Everything the generators need.
struct Model<'a> {
    function: &'a ItemFn,
    queue: &'a LitStr,
    method: LitStr,
    /// The marker type implementing `Method`.
    marker: Ident,
    /// Visibility of the module (the function's).
    outer_vis: &'a Visibility,
    /// Visibility of the items inside the module (as visible as the function).
    inner_vis: TokenStream,
    signature: &'a WireSignature,
    /// `::lepus::Error<E>`'s `E`.
    err: TokenStream,
    /// `.blocking(true)` / `.time_limit(..)` calls on the handler.
    limits: TokenStream,
}

/// The whole expansion.
pub(crate) fn expand(args: &RpcArgs, function: &ItemFn, signature: &WireSignature) -> TokenStream {
    let name = &function.sig.ident;
    let plain = name.to_string().trim_start_matches("r#").to_owned();
    let model = Model {
        function,
        queue: &args.queue,
        method: args
            .name
            .clone()
            .unwrap_or_else(|| LitStr::new(&plain, name.span())),
        marker: format_ident!("{}Rpc", upper_camel(&plain), span = name.span()),
        outer_vis: &function.vis,
        inner_vis: inner_visibility(&function.vis),
        signature,
        err: match &signature.err {
            Some(err) => quote!(#err),
            None => quote!(::lepus::__private::Never),
        },
        limits: crate::task::attr::handler_limits(args.blocking, args.time_limit),
    };
    let local = gen_local_fn(&model);
    let module = gen_module(&model);
    quote! { #local #module }
}

/// The annotated function itself, unchanged.
fn gen_local_fn(model: &Model<'_>) -> TokenStream {
    let function = model.function;
    quote! { #function }
}

/// The module holding the stub, named like the function.
fn gen_module(model: &Model<'_>) -> TokenStream {
    let name = &model.function.sig.ident;
    let vis = model.outer_vis;
    let doc = format!(
        " Remote calls to `{}` over AMQP queue `{}` (method `{}`), and its worker handler.",
        name,
        model.queue.value(),
        model.method.value()
    );
    let consts = gen_consts(model);
    let marker = gen_marker(model);
    let method_impl = gen_method_impl(model);
    let call = gen_call(model);
    let call_with = gen_call_with(model);
    let handler = gen_handler(model);
    quote! {
        #[doc = #doc]
        #vis mod #name {
            #[allow(unused_imports)]
            use super::*;
            #consts
            #marker
            #method_impl
            #call
            #call_with
            #handler
        }
    }
}

/// `QUEUE` and `METHOD`.
fn gen_consts(model: &Model<'_>) -> TokenStream {
    let vis = &model.inner_vis;
    let queue = model.queue;
    let method = &model.method;
    quote! {
        /// The queue this method is served on.
        #vis const QUEUE: &::core::primitive::str = #queue;
        /// The method name carried in the `type` property of each request.
        #vis const METHOD: &::core::primitive::str = #method;
    }
}

/// The marker type that implements `Method`.
fn gen_marker(model: &Model<'_>) -> TokenStream {
    let vis = &model.inner_vis;
    let marker = &model.marker;
    quote! {
        /// The `lepus::Method` implementation of this RPC (for `Client::call::<..>`).
        #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy)]
        #vis struct #marker;
    }
}

/// `impl Method for FibRpc`.
fn gen_method_impl(model: &Model<'_>) -> TokenStream {
    let marker = &model.marker;
    let queue = model.queue;
    let method = &model.method;
    let args_ty = args_tuple_type(model.signature);
    let ok = &model.signature.ok;
    let err = &model.err;
    let function = &model.function.sig.ident;
    let args = Ident::new("args", Span::mixed_site());
    let names: Vec<&Ident> = model.signature.args.iter().map(|(n, _)| n).collect();
    let unpack = if names.is_empty() {
        quote! { let _ = #args; }
    } else {
        quote! { let ( #(#names,)* ) = #args; }
    };
    let body = if model.signature.err.is_some() {
        quote! { super::#function( #(#names),* ).await }
    } else {
        quote! { ::core::result::Result::Ok(super::#function( #(#names),* ).await) }
    };
    quote! {
        impl ::lepus::__private::Method for #marker {
            const QUEUE: &'static ::core::primitive::str = #queue;
            const NAME: &'static ::core::primitive::str = #method;
            type Args = #args_ty;
            type Ok = #ok;
            type Err = #err;

            fn invoke(
                #args: Self::Args,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<Self::Ok, Self::Err>,
            > + ::core::marker::Send + 'static {
                #unpack
                async move { #body }
            }
        }
    }
}

/// `call(&client, args..)`.
fn gen_call(model: &Model<'_>) -> TokenStream {
    let vis = &model.inner_vis;
    let marker = &model.marker;
    let ok = &model.signature.ok;
    let err = &model.err;
    let client = Ident::new("client", Span::mixed_site());
    let params = params(model.signature);
    let tuple = args_tuple_value(model.signature);
    quote! {
        /// Calls the function on a worker and waits for its result (the client's default timeout).
        #vis async fn call(
            #client: &::lepus::__private::Client,
            #(#params),*
        ) -> ::core::result::Result<#ok, ::lepus::__private::Error<#err>> {
            ::lepus::__private::Client::call::<#marker>(
                #client,
                #tuple,
                <::lepus::__private::CallOptions as ::core::default::Default>::default(),
            )
            .await
        }
    }
}

/// `call_with(&client, args.., options)`.
fn gen_call_with(model: &Model<'_>) -> TokenStream {
    let vis = &model.inner_vis;
    let marker = &model.marker;
    let ok = &model.signature.ok;
    let err = &model.err;
    let client = Ident::new("client", Span::mixed_site());
    let options = Ident::new("options", Span::mixed_site());
    let params = params(model.signature);
    let tuple = args_tuple_value(model.signature);
    quote! {
        /// Calls the function on a worker with per-call options (timeout, priority).
        #vis async fn call_with(
            #client: &::lepus::__private::Client,
            #(#params,)*
            #options: ::lepus::__private::CallOptions,
        ) -> ::core::result::Result<#ok, ::lepus::__private::Error<#err>> {
            ::lepus::__private::Client::call::<#marker>(#client, #tuple, #options).await
        }
    }
}

/// `handler()`.
fn gen_handler(model: &Model<'_>) -> TokenStream {
    let vis = &model.inner_vis;
    let marker = &model.marker;
    let limits = &model.limits;
    quote! {
        /// The handler to give a worker: `Worker::new(&conn).serve(handler())`.
        #vis fn handler() -> ::lepus::__private::Handler {
            ::lepus::__private::Handler::new::<#marker>() #limits
        }
    }
}

/// `name: Type` for each argument.
pub(crate) fn params(signature: &WireSignature) -> Vec<TokenStream> {
    signature
        .args
        .iter()
        .map(|(name, ty)| quote! { #name: #ty })
        .collect()
}

/// `(A, B,)`, or `[(); 0]` (an empty MessagePack array) for no arguments.
pub(crate) fn args_tuple_type(signature: &WireSignature) -> TokenStream {
    if signature.args.is_empty() {
        return quote! { [(); 0] };
    }
    let types: Vec<&Type> = signature.args.iter().map(|(_, ty)| ty).collect();
    quote! { ( #(#types,)* ) }
}

/// `(a, b,)`, or `[]` for no arguments.
pub(crate) fn args_tuple_value(signature: &WireSignature) -> TokenStream {
    if signature.args.is_empty() {
        return quote! { [] };
    }
    let names: Vec<&Ident> = signature.args.iter().map(|(name, _)| name).collect();
    quote! { ( #(#names,)* ) }
}

/// The visibility of the module's items: as visible as the function, one module further in.
pub(crate) fn inner_visibility(vis: &Visibility) -> TokenStream {
    match vis {
        Visibility::Inherited => quote! { pub(super) },
        Visibility::Public(_) => quote! { pub },
        Visibility::Restricted(restricted) => {
            let path = &restricted.path;
            let first = path.segments.first().map(|s| s.ident.to_string());
            match first.as_deref() {
                Some("crate") if restricted.in_token.is_none() => quote! { pub(crate) },
                Some("self") if restricted.in_token.is_none() => quote! { pub(super) },
                Some("super") if restricted.in_token.is_none() => quote! { pub(in super::super) },
                Some("self") => {
                    let rest = path.segments.iter().skip(1);
                    quote! { pub(in super #(::#rest)*) }
                }
                Some("super") => quote! { pub(in super::#path) },
                _ => quote! { pub(in #path) },
            }
        }
    }
}

/// `fib_fast` -> `FibFast`.
pub(crate) fn upper_camel(snake: &str) -> String {
    snake
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn marker_names_follow_one_rule() {
        assert_eq!(upper_camel("fib"), "Fib");
        assert_eq!(upper_camel("fib_fast_2"), "FibFast2");
        assert_eq!(upper_camel("_odd__name"), "OddName");
    }

    #[test]
    fn inner_items_are_exactly_as_visible_as_the_function() {
        let cases = [
            ("", "pub (super)"),
            ("pub", "pub"),
            ("pub(crate)", "pub (crate)"),
            ("pub(super)", "pub (in super :: super)"),
            ("pub(in crate::a)", "pub (in crate :: a)"),
        ];
        for (input, expected) in cases {
            let vis: Visibility = syn::parse_str(input).unwrap();
            assert_eq!(inner_visibility(&vis).to_string(), expected, "{input}");
        }
    }
}
