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
//! impl ::lepus::__private::Invoke<()> for fib { .. }      // how a worker runs it
//! ```
//! Parameters typed `State<T>` or `Context` (`&Context`) are not sent: `invoke` takes them from
//! the request's context (`lepus::Inject`) and passes them in place; the stubs take only the
//! wire arguments.
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

use proc_macro2::TokenStream;
use quote::quote;
use syn::{ItemFn, LitStr};

use super::parse::{QueueName, RpcArgs};
use crate::generate::{
    args_tuple_type, call_result, err_codec_fn, handler_fn, invoke_fn, marker_struct,
    returns_projections, wire_assertions, ClientFns, InvokeInput, WireUse,
};
use crate::signature::WireSignature;

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

/// `impl fib { QUEUE, METHOD, call, call_with, handler }`.
fn gen_inherent(model: &Model<'_>) -> TokenStream {
    let name = &model.function.sig.ident;
    let queue = model.queue;
    let method = &model.method;
    let calls = gen_calls(model);
    let handler = handler_fn(
        quote!(::lepus::__private::Handler::new::<#name>()),
        &model.limits,
    );
    quote! {
        impl #name {
            /// The queue this method is served on.
            pub const QUEUE: &'static ::core::primitive::str = #queue;
            /// The method name carried in the `type` property of each request.
            pub const METHOD: &'static ::core::primitive::str = #method;
            #calls
            #handler
        }
    }
}

/// `impl Method for fib` and `impl Invoke<()> for fib`.
fn gen_method_impl(model: &Model<'_>) -> TokenStream {
    let name = &model.function.sig.ident;
    let args_ty = args_tuple_type(model.signature);
    let (ok, err) = returns_projections(&model.signature.ret);
    let codec = err_codec_fn();
    let invoke = gen_invoke(model);
    quote! {
        impl ::lepus::__private::Method for #name {
            const QUEUE: &'static ::core::primitive::str = <#name>::QUEUE;
            const NAME: &'static ::core::primitive::str = <#name>::METHOD;
            type Args = #args_ty;
            type Ok = #ok;
            type Err = #err;

            #codec
        }

        #invoke
    }
}

/// `impl Invoke<()> for fib`: the injected parameters taken from the context, the wire
/// arguments unpacked, the function called.
fn gen_invoke(model: &Model<'_>) -> TokenStream {
    let name = &model.function.sig.ident;
    let invoke = invoke_fn(
        model.signature,
        quote!(Self::Ok),
        InvokeInput::Receiver(quote!(())),
        |receiver, call_args| {
            (
                quote! { let _ = #receiver; },
                quote! { ::lepus::__private::Returns::into_result(#name( #(#call_args),* ).await) },
            )
        },
    );
    quote! {
        impl ::lepus::__private::Invoke<()> for #name {
            #invoke
        }
    }
}

/// `call(&client, args..)` and `call_with(&client, args.., options)`.
fn gen_calls(model: &Model<'_>) -> TokenStream {
    let name = &model.function.sig.ident;
    ClientFns {
        name: "call",
        doc: " Calls the function on a worker and waits for its result (the client's default timeout).",
        doc_with: " Calls the function on a worker with per-call options (timeout, priority, queue).",
        entry: quote!(::lepus::__private::Client::call::<#name>),
        options: quote!(::lepus::__private::CallOptions),
        output: call_result(name),
    }
    .generate(model.signature)
}
