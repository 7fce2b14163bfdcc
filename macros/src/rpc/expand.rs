//! Emits the items of `#[lepus::rpc]`, one generator function per item.
//!
//! For `async fn fib(n: u32) -> Result<u64, MathError>` on queue `q`:
//! ```text
//! async fn fib(n: u32) -> Result<u64, MathError> { .. }   // unchanged: callable locally
//! struct fib {}                                           // same name, type namespace only
//! impl fib {
//!     pub const QUEUE: &str = "q";
//!     pub const METHOD: &str = "fib";
//!     pub async fn call(client, n: u32) -> Result<u64, ::lepus::Error<MathError>>;
//!     pub async fn call_with(client, n: u32, options: CallOptions) -> ..;
//!     pub fn handler() -> ::lepus::Handler;
//! }
//! impl ::lepus::__private::Method for fib { .. }          // `fib` is the method's marker
//! ```
//! The struct has braces and no fields, so it lives in the type namespace only and does not
//! clash with the function. It is declared next to the function, so the items resolve the
//! function's types where the function does, also inside a function body (a `mod` would not see
//! types declared in that body).
//!
//! Success and failure are read through `<R as ::lepus::__private::Returns>` (`R` the return
//! type as written), so `anyhow::Result<T>` and other aliases of `Result` are failures when they
//! are `Err`; the application error's codec (typed or text) is picked where the types are
//! concrete, in `err_codec` (see `lepus_runtime`'s `remote_error`).
//!
//! Every path is absolute (`::core::..`, `::lepus::__private::..`), so the output compiles
//! under `#![no_implicit_prelude]`. Generated parameter names (`client`, `options`, `args`) use
//! mixed-site hygiene and cannot clash with the function's own argument names.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn, LitStr, Type};

use super::parse::{QueueName, RpcArgs};
use super::validate::WireSignature;

/// Everything the generators need.
struct Model<'a> {
    function: &'a ItemFn,
    queue: &'a QueueName,
    method: LitStr,
    signature: &'a WireSignature,
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
        signature,
        limits: crate::task::attr::handler_limits(args.blocking, args.time_limit),
    };
    let marker = gen_marker(&model);
    let inherent = gen_inherent(&model);
    let method_impl = gen_method_impl(&model);
    let checks = model.queue.check(quote!(<#name>::QUEUE));
    let wire_checks = wire_assertions(signature, WireUse::Both);
    quote! {
        #function
        #marker
        #inherent
        #method_impl
        #checks
        #wire_checks
    }
}

/// The marker struct named like the function.
fn gen_marker(model: &Model<'_>) -> TokenStream {
    let name = &model.function.sig.ident;
    let vis = &model.function.vis;
    let doc = format!(
        " Remote calls to `{}` over AMQP queue {} (method `{}`), and its worker handler; also \
         the `lepus::Method` implementation of this RPC (for `Client::call::<{}>`).",
        name,
        model.queue.describe(),
        model.method.value(),
        name,
    );
    marker_struct(name, vis, &doc)
}

/// `struct name {}`: the marker every attribute emits (type namespace only).
pub(crate) fn marker_struct(name: &Ident, vis: &syn::Visibility, doc: &str) -> TokenStream {
    quote! {
        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy)]
        #vis struct #name {}
    }
}

/// `impl fib { QUEUE, METHOD, call, call_with, handler }`.
fn gen_inherent(model: &Model<'_>) -> TokenStream {
    let name = &model.function.sig.ident;
    let queue = model.queue;
    let method = &model.method;
    let call = gen_call(model);
    let call_with = gen_call_with(model);
    let limits = &model.limits;
    quote! {
        impl #name {
            /// The queue this method is served on.
            pub const QUEUE: &'static ::core::primitive::str = #queue;
            /// The method name carried in the `type` property of each request.
            pub const METHOD: &'static ::core::primitive::str = #method;
            #call
            #call_with
            /// The handler to give a worker: `Worker::new(&conn).serve(handler())`.
            pub fn handler() -> ::lepus::__private::Handler {
                ::lepus::__private::Handler::new::<#name>() #limits
            }
        }
    }
}

/// `impl Method for fib`.
fn gen_method_impl(model: &Model<'_>) -> TokenStream {
    let name = &model.function.sig.ident;
    let args_ty = args_tuple_type(model.signature);
    let (ok, err) = returns_projections(&model.signature.ret);
    let args = Ident::new("args", Span::mixed_site());
    let unpack = unpack_args(model.signature, &args);
    let names = arg_names(model.signature);
    let codec = err_codec_fn();
    quote! {
        impl ::lepus::__private::Method for #name {
            const QUEUE: &'static ::core::primitive::str = <#name>::QUEUE;
            const NAME: &'static ::core::primitive::str = <#name>::METHOD;
            type Args = #args_ty;
            type Ok = #ok;
            type Err = #err;

            fn invoke(
                #args: Self::Args,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<Self::Ok, Self::Err>,
            > + ::core::marker::Send + 'static {
                #unpack
                async move {
                    ::lepus::__private::Returns::into_result(#name( #(#names),* ).await)
                }
            }

            #codec
        }
    }
}

/// `err_codec` and `describe_err` of a `Method` impl: the codec and description of `Self::Err`
/// chosen by autoref specialization, where the type is concrete.
fn err_codec_fn() -> TokenStream {
    let err = Ident::new("err", Span::mixed_site());
    quote! {
        // The extra references select the codec (autoref specialization).
        #[allow(clippy::needless_borrow)]
        fn err_codec() -> impl ::lepus::__private::ErrCodec<Self::Err> {
            #[allow(unused_imports)]
            use ::lepus::__private::{SelectNever as _, SelectSerde as _, SelectText as _};
            (&&&&::lepus::__private::ErrWire::<Self::Err>::NEW).codec()
        }

        #[allow(clippy::needless_borrow)]
        fn describe_err(#err: &Self::Err) -> ::std::string::String {
            #[allow(unused_imports)]
            use ::lepus::__private::{DescribeDebug as _, DescribeDisplay as _, DescribeName as _};
            (&&&&::lepus::__private::Describe(#err)).describe()
        }
    }
}

/// `<R as Returns>::Ok` and `<R as Returns>::Err`, spanned at the return type so that a type
/// that is neither a `Result` nor `Plain` is reported there.
pub(crate) fn returns_projections(ret: &Type) -> (TokenStream, TokenStream) {
    let span = ret.span();
    (
        quote_spanned!(span=> <#ret as ::lepus::__private::Returns>::Ok),
        quote_spanned!(span=> <#ret as ::lepus::__private::Returns>::Err),
    )
}

/// `let (a, b,) = args;` (or `let _ = args;` for no arguments).
pub(crate) fn unpack_args(signature: &WireSignature, args: &Ident) -> TokenStream {
    let names = arg_names(signature);
    if names.is_empty() {
        quote! { let _ = #args; }
    } else {
        quote! { let ( #(#names,)* ) = #args; }
    }
}

/// The argument names, in order.
pub(crate) fn arg_names(signature: &WireSignature) -> Vec<&Ident> {
    signature.args.iter().map(|(n, _)| n).collect()
}

/// How the arguments travel: decoded only (events), or both ways (calls, tasks).
#[derive(Clone, Copy)]
pub(crate) enum WireUse {
    Both,
    Decoded,
}

/// One compile-time check per argument that its type can travel, spanned at the argument's
/// type so that a missing `Serialize`/`Deserialize` is reported at the parameter rather than
/// at the attribute.
pub(crate) fn wire_assertions(signature: &WireSignature, used: WireUse) -> TokenStream {
    let checks = signature.args.iter().map(|(_, ty)| {
        let span = ty.span();
        let bound = match used {
            WireUse::Both => quote_spanned!(span=>
                ::lepus::__private::Serialize + ::lepus::__private::DeserializeOwned),
            WireUse::Decoded => quote_spanned!(span=> ::lepus::__private::DeserializeOwned),
        };
        quote_spanned! {span=>
            const _: () = {
                fn travels<T: #bound>() {}
                let _ = travels::<#ty>;
            };
        }
    });
    quote! { #(#checks)* }
}

/// `call(&client, args..)`.
fn gen_call(model: &Model<'_>) -> TokenStream {
    let name = &model.function.sig.ident;
    let client = Ident::new("client", Span::mixed_site());
    let params = params(model.signature);
    let tuple = args_tuple_value(model.signature);
    quote! {
        /// Calls the function on a worker and waits for its result (the client's default timeout).
        pub async fn call(
            #client: &::lepus::__private::Client,
            #(#params),*
        ) -> ::core::result::Result<
            <#name as ::lepus::__private::Method>::Ok,
            ::lepus::__private::Error<<#name as ::lepus::__private::Method>::Err>,
        > {
            ::lepus::__private::Client::call::<#name>(
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
    let name = &model.function.sig.ident;
    let client = Ident::new("client", Span::mixed_site());
    let options = Ident::new("options", Span::mixed_site());
    let params = params(model.signature);
    let tuple = args_tuple_value(model.signature);
    quote! {
        /// Calls the function on a worker with per-call options (timeout, priority, queue).
        pub async fn call_with(
            #client: &::lepus::__private::Client,
            #(#params,)*
            #options: ::lepus::__private::CallOptions,
        ) -> ::core::result::Result<
            <#name as ::lepus::__private::Method>::Ok,
            ::lepus::__private::Error<<#name as ::lepus::__private::Method>::Err>,
        > {
            ::lepus::__private::Client::call::<#name>(#client, #tuple, #options).await
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

/// `(A, B,)`, or `[(); 0]` (an empty MessagePack array) for no arguments; the parentheses
/// carry the span of the parameter list, where an error about the tuple then points.
pub(crate) fn args_tuple_type(signature: &WireSignature) -> TokenStream {
    let span = signature.params_span;
    if signature.args.is_empty() {
        return quote_spanned! {span=> [(); 0] };
    }
    let types: Vec<&Type> = signature.args.iter().map(|(_, ty)| ty).collect();
    quote_spanned! {span=> ( #(#types,)* ) }
}

/// `(a, b,)`, or `[]` for no arguments.
pub(crate) fn args_tuple_value(signature: &WireSignature) -> TokenStream {
    if signature.args.is_empty() {
        return quote! { [] };
    }
    let names: Vec<&Ident> = signature.args.iter().map(|(name, _)| name).collect();
    quote! { ( #(#names,)* ) }
}
