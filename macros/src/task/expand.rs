//! Emits the items of `#[lepus::task]`, one generator function per item.
//!
//! For `async fn send_email(to: String) -> Result<(), SmtpError>` on queue `emails`:
//! ```text
//! async fn send_email(to: String) -> Result<(), SmtpError> { .. }  // unchanged: callable locally
//! mod send_email {
//!     use super::*;
//!     pub const QUEUE: &str = "emails";
//!     pub const NAME: &str = "send_email";
//!     pub struct SendEmailTask;                  // naming rule: UpperCamel(fn) + "Task"
//!     impl ::lepus::__private::Task for SendEmailTask { .. }
//!     pub async fn enqueue(client, to: String) -> Result<TaskId, ::lepus::Error>;
//!     pub async fn enqueue_with(client, to: String, options: EnqueueOptions) -> ..;
//!     pub fn handler() -> ::lepus::Handler;
//! }
//! ```
//! Paths are absolute, as in `#[lepus::rpc]`'s expansion, so the output compiles under
//! `#![no_implicit_prelude]`.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::{Ident, ItemFn, LitStr};

use super::parse::TaskArgs;
use crate::rpc::expand::{
    args_tuple_type, args_tuple_value, inner_visibility, params, upper_camel,
};
use crate::rpc::validate::WireSignature;

/// The whole expansion.
pub(crate) fn expand(args: &TaskArgs, function: &ItemFn, signature: &WireSignature) -> TokenStream {
    let name = &function.sig.ident;
    let plain = name.to_string().trim_start_matches("r#").to_owned();
    let task_name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&plain, name.span()));
    let marker = format_ident!("{}Task", upper_camel(&plain), span = name.span());
    let vis = &function.vis;
    let inner = inner_visibility(vis);
    let queue = match &args.queue {
        Some(queue) => queue.clone(),
        None => LitStr::new("", Span::call_site()),
    };
    let doc = format!(
        " Enqueue `{}` on AMQP queue `{}` (task `{}`), and its worker handler.",
        plain,
        queue.value(),
        task_name.value()
    );
    let task_impl = gen_task_impl(args, function, signature, &marker, &queue, &task_name);
    let enqueue = gen_enqueue(signature, &marker, &inner);
    // The time limit is in the task's options; only `blocking` is set on the handler.
    let limits = super::attr::handler_limits(args.blocking, None);
    quote! {
        #function
        #[doc = #doc]
        #vis mod #name {
            #[allow(unused_imports)]
            use super::*;
            /// The queue this task is enqueued on.
            #inner const QUEUE: &::core::primitive::str = #queue;
            /// The task name carried in the `x-lepus-method` header.
            #inner const NAME: &::core::primitive::str = #task_name;
            /// The `lepus::task::Task` implementation of this task.
            #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy)]
            #inner struct #marker;
            #task_impl
            #enqueue
            /// The handler to give a worker: `Worker::new(&conn).serve(handler())`.
            #inner fn handler() -> ::lepus::__private::Handler {
                ::lepus::__private::task_handler::<#marker>() #limits
            }
        }
    }
}

/// `impl Task for SendEmailTask`.
fn gen_task_impl(
    args: &TaskArgs,
    function: &ItemFn,
    signature: &WireSignature,
    marker: &Ident,
    queue: &LitStr,
    task_name: &LitStr,
) -> TokenStream {
    let args_ty = args_tuple_type(signature);
    let err = match &signature.err {
        Some(err) => quote!(#err),
        None => quote!(::lepus::__private::Never),
    };
    let fn_name = &function.sig.ident;
    let input = Ident::new("args", Span::mixed_site());
    let names: Vec<&Ident> = signature.args.iter().map(|(n, _)| n).collect();
    let unpack = if names.is_empty() {
        quote! { let _ = #input; }
    } else {
        quote! { let ( #(#names,)* ) = #input; }
    };
    let body = if signature.err.is_some() {
        quote! {
            match super::#fn_name( #(#names),* ).await {
                ::core::result::Result::Ok(_) => ::core::result::Result::Ok(()),
                ::core::result::Result::Err(e) => ::core::result::Result::Err(e),
            }
        }
    } else {
        quote! {
            let _ = super::#fn_name( #(#names),* ).await;
            ::core::result::Result::Ok(())
        }
    };
    let options = gen_options(args);
    quote! {
        impl ::lepus::__private::Task for #marker {
            const QUEUE: &'static ::core::primitive::str = #queue;
            const NAME: &'static ::core::primitive::str = #task_name;
            type Args = #args_ty;
            type Err = #err;

            fn options() -> ::lepus::__private::TaskOptions {
                #options
            }

            fn invoke(
                #input: Self::Args,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), Self::Err>,
            > + ::core::marker::Send + 'static {
                #unpack
                async move { #body }
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
    chain
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `enqueue(&client, args..)` and `enqueue_with(&client, args.., options)`.
fn gen_enqueue(signature: &WireSignature, marker: &Ident, vis: &TokenStream) -> TokenStream {
    let client = Ident::new("client", Span::mixed_site());
    let options = Ident::new("options", Span::mixed_site());
    let params = params(signature);
    let tuple = args_tuple_value(signature);
    quote! {
        /// Enqueues the task (persistent, on its durable queue) and returns its id once the
        /// broker confirmed it.
        #vis async fn enqueue(
            #client: &::lepus::__private::Client,
            #(#params),*
        ) -> ::core::result::Result<::lepus::__private::TaskId, ::lepus::__private::Error> {
            ::lepus::__private::enqueue::<#marker>(
                #client,
                #tuple,
                <::lepus::__private::EnqueueOptions as ::core::default::Default>::default(),
            )
            .await
        }

        /// Enqueues the task with options (delay, priority, `message_id`).
        #vis async fn enqueue_with(
            #client: &::lepus::__private::Client,
            #(#params,)*
            #options: ::lepus::__private::EnqueueOptions,
        ) -> ::core::result::Result<::lepus::__private::TaskId, ::lepus::__private::Error> {
            ::lepus::__private::enqueue::<#marker>(#client, #tuple, #options).await
        }
    }
}
