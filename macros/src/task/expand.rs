//! Emits the items of `#[lepus::task]`, one generator function per item.
//!
//! For `async fn send_email(to: String) -> anyhow::Result<()>` on queue `emails`:
//! ```text
//! async fn send_email(to: String) -> anyhow::Result<()> { .. }  // unchanged: callable locally
//! struct send_email {}                          // type namespace only (see `rpc::expand`)
//! impl send_email {
//!     pub const QUEUE: &str = "emails";
//!     pub const NAME: &str = "send_email";
//!     pub async fn enqueue(client, to: String) -> Result<TaskId, ::lepus::Error>;
//!     pub async fn enqueue_with(client, to: String, options: EnqueueOptions) -> ..;
//!     pub async fn submit(client, to: String) -> Result<TaskHandle<send_email>, ::lepus::Error>;
//!     pub async fn submit_with(client, to: String, options: EnqueueOptions) -> ..;
//!     pub fn signature(to: String) -> Signature<send_email>;   // a workflow step
//!     pub fn partial() -> Partial<send_email, String>;         // `to` from the previous step
//!     pub fn handler() -> ::lepus::Handler;
//! }
//! impl ::lepus::__private::Task for send_email { .. }
//! ```
//! A failed attempt is whatever `<R as Returns>` says is a failure (`R` the return type as
//! written): an `Err` of `Result` or of any alias of it (`anyhow::Result`, `io::Result`, ...).
//! Paths are absolute, as in `#[lepus::rpc]`'s expansion, so the output compiles under
//! `#![no_implicit_prelude]`.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{Ident, ItemFn, LitStr};

use super::parse::TaskArgs;
use crate::generate::{
    args_tuple_type, args_tuple_value, handler_fn, invoke_fn, marker_struct, params,
    returns_projections, wire_assertions, ClientFns, InvokeInput, WireUse,
};
use crate::signature::WireSignature;

/// The whole expansion.
pub(crate) fn expand(args: &TaskArgs, function: &ItemFn, signature: &WireSignature) -> TokenStream {
    let name = &function.sig.ident;
    let plain = name.to_string().trim_start_matches("r#").to_owned();
    let task_name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&plain, name.span()));
    let queue = match &args.queue {
        Some(queue) => queue,
        // Proof: `parse_args` reports a missing queue, so expansion never runs without one.
        None => return quote! { #function },
    };
    let doc = format!(
        " Enqueue `{}` on AMQP queue {} (task `{}`), and its worker handler; also the \
         `lepus::task::Task` implementation of this task.",
        plain,
        queue.describe(),
        task_name.value()
    );
    let marker = marker_struct(name, &function.vis, &doc);
    let task_impl = gen_task_impl(args, function, signature, &task_name);
    let enqueue = gen_enqueue(signature, name);
    // The time limit is in the task's options; only `blocking` is set on the handler.
    let limits = super::attr::handler_limits(args.blocking, None);
    let handler = handler_fn(quote!(::lepus::__private::task_handler::<#name>()), &limits);
    let checks = queue.check(quote!(<#name>::QUEUE));
    let wire_checks = wire_assertions(signature, WireUse::Both);
    quote! {
        #function
        #marker
        impl #name {
            /// The queue this task is enqueued on.
            pub const QUEUE: &'static ::core::primitive::str = #queue;
            /// The task name carried in the `x-lepus-method` header.
            pub const NAME: &'static ::core::primitive::str = #task_name;
            #enqueue
            #handler
        }
        #task_impl
        #checks
        #wire_checks
    }
}

/// `impl Task for send_email`.
fn gen_task_impl(
    args: &TaskArgs,
    function: &ItemFn,
    signature: &WireSignature,
    task_name: &LitStr,
) -> TokenStream {
    let name = &function.sig.ident;
    let args_ty = args_tuple_type(signature);
    let (ok, err) = returns_projections(&signature.ret);
    let invoke = invoke_fn(
        signature,
        quote!(Self::Output),
        InvokeInput::Args,
        |_, call_args| {
            (
                TokenStream::new(),
                quote! { ::lepus::__private::Returns::into_result(#name( #(#call_args),* ).await) },
            )
        },
    );
    let body = Ident::new("body", Span::mixed_site());
    let value = Ident::new("value", Span::mixed_site());
    let options = gen_options(args);
    quote! {
        impl ::lepus::__private::Task for #name {
            const QUEUE: &'static ::core::primitive::str = <#name>::QUEUE;
            const NAME: &'static ::core::primitive::str = #task_name;
            type Args = #args_ty;
            type Err = #err;
            type Output = #ok;

            fn options() -> ::lepus::__private::TaskOptions {
                #options
            }

            #invoke

            // The extra references select the codec (autoref specialization, see `result_wire`).
            #[allow(clippy::needless_borrow)]
            fn encode_output(#value: &Self::Output) -> ::core::option::Option<::std::vec::Vec<::core::primitive::u8>> {
                #[allow(unused_imports)]
                use ::lepus::__private::{OutOpaque as _, OutSerde as _};
                (&&&::lepus::__private::OutWire::<Self::Output>::NEW).encode_output(#value)
            }

            #[allow(clippy::needless_borrow)]
            fn decode_output(#body: &[::core::primitive::u8]) -> ::core::result::Result<Self::Output, ::std::string::String> {
                #[allow(unused_imports)]
                use ::lepus::__private::{OutOpaque as _, OutSerde as _};
                (&&&::lepus::__private::OutWire::<Self::Output>::NEW).decode_output(#body)
            }

            #[allow(clippy::needless_borrow)]
            fn encode_error(#value: &Self::Err) -> ::core::option::Option<::std::vec::Vec<::core::primitive::u8>> {
                #[allow(unused_imports)]
                use ::lepus::__private::{TaskErrNever as _, TaskErrOpaque as _, TaskErrSerde as _, TaskErrText as _};
                (&&&&&::lepus::__private::TaskErrWire::<Self::Err>::NEW).encode_error(#value)
            }

            #[allow(clippy::needless_borrow)]
            fn decode_error(#body: &[::core::primitive::u8]) -> ::core::result::Result<Self::Err, ::std::string::String> {
                #[allow(unused_imports)]
                use ::lepus::__private::{TaskErrNever as _, TaskErrOpaque as _, TaskErrSerde as _, TaskErrText as _};
                (&&&&&::lepus::__private::TaskErrWire::<Self::Err>::NEW).decode_error(#body)
            }
        }
    }
}

/// The `TaskOptions` builder chain.
fn gen_options(args: &TaskArgs) -> TokenStream {
    let mut chain = quote! { ::lepus::__private::TaskOptions::new() };
    if let Some(retries) = args.retries {
        chain = quote! { #chain.retries(#retries) };
    }
    if let Some((first, max)) = args.backoff {
        let (first, max) = (millis(first), millis(max));
        chain = quote! {
            #chain.backoff(::lepus::__private::Backoff::new(
                ::lepus::__private::Duration::from_millis(#first),
                ::lepus::__private::Duration::from_millis(#max),
            ))
        };
    }
    if let Some(limit) = args.time_limit {
        let limit = millis(limit);
        chain = quote! { #chain.time_limit(::lepus::__private::Duration::from_millis(#limit)) };
    }
    if let Some(max) = args.max_priority {
        chain = quote! { #chain.max_priority(#max) };
    }
    if let Some(queue) = &args.dead_letter_queue {
        chain = quote! { #chain.dead_letter_queue(#queue) };
    }
    if args.quorum {
        chain = quote! { #chain.quorum() };
    }
    if args.cancellable {
        chain = quote! { #chain.cancellable() };
    }
    if let Some((count, secs)) = args.rate_limit {
        chain = quote! {
            #chain.rate_limit(::lepus::__private::RateLimit::new(
                #count,
                ::lepus::__private::Duration::from_secs(#secs),
            ))
        };
    }
    if let Some(ttl) = args.result_ttl {
        let ttl = millis(ttl);
        chain = quote! { #chain.result_ttl(::lepus::__private::Duration::from_millis(#ttl)) };
    }
    chain
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `enqueue(&client, args..)`, `submit(&client, args..)`, their `_with(.., options)` twins and
/// the workflow constructors.
fn gen_enqueue(signature: &WireSignature, name: &Ident) -> TokenStream {
    let options = quote!(::lepus::__private::EnqueueOptions);
    let enqueue = ClientFns {
        name: "enqueue",
        doc: " Enqueues the task (persistent, on its durable queue) and returns its id once the \
              broker confirmed it.",
        doc_with: " Enqueues the task with options (delay, priority, `message_id`, queue).",
        entry: quote!(::lepus::__private::enqueue::<#name>),
        options: options.clone(),
        output: quote! {
            ::core::result::Result<::lepus::__private::TaskId, ::lepus::__private::Error>
        },
    }
    .generate(signature);
    let submit = ClientFns {
        name: "submit",
        doc: " Enqueues the task and keeps its result on the broker (for its `result_ttl`): \
              `handle.result(timeout).await` waits for it, `handle.status().await` says where the \
              task is, and `TaskHandle::from_id` gets the same handle in another process.",
        doc_with: " [`submit`](Self::submit) with options (delay, priority, `message_id`, queue, \
                   `result_ttl`).",
        entry: quote!(::lepus::__private::submit::<#name>),
        options,
        output: quote! {
            ::core::result::Result<
                ::lepus::__private::TaskHandle<#name>,
                ::lepus::__private::Error,
            >
        },
    }
    .generate(signature);
    let workflow = gen_workflow(signature, name);
    quote! {
        #enqueue
        #submit
        #workflow
    }
}

/// `signature(args..)` (a workflow step with all its arguments) and, for a task with
/// arguments, `partial(args after the first..)` (a step whose first argument is the previous
/// step's output).
fn gen_workflow(signature: &WireSignature, name: &Ident) -> TokenStream {
    let params = params(signature);
    let tuple = args_tuple_value(signature);
    let full = quote! {
        /// This task as a workflow step with all its arguments:
        /// `lepus::chain(signature(..))`, a `lepus::group` member.
        pub fn signature(
            #(#params),*
        ) -> ::lepus::__private::Signature<#name> {
            ::lepus::__private::Signature::<#name>::new(#tuple)
        }
    };
    let Some(((_, first), rest)) = signature.args.split_first() else {
        return full;
    };
    let rest_params: Vec<TokenStream> = rest.iter().map(|(n, ty)| quote! { #n: #ty }).collect();
    let rest_names: Vec<&Ident> = rest.iter().map(|(n, _)| n).collect();
    let rest_tuple = if rest.is_empty() {
        quote! { [(); 0] }
    } else {
        quote! { ( #(#rest_names,)* ) }
    };
    quote! {
        #full

        /// This task as a workflow step whose first argument is the previous step's output
        /// (`chain(..).then(partial(..))`, a chord's callback): the other arguments.
        pub fn partial(
            #(#rest_params),*
        ) -> ::lepus::__private::Partial<#name, #first> {
            ::lepus::__private::Partial::<#name, #first>::new(#rest_tuple)
        }
    }
}
