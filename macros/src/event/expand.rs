//! Emits the items of `#[lepus::event]`, one generator function per item.
//!
//! For `async fn on_error(line: LogLine)` listening to topic exchange `logs`:
//! ```text
//! async fn on_error(line: LogLine) { .. }          // unchanged: callable locally
//! mod on_error {
//!     use super::*;
//!     pub const EXCHANGE: &str = "logs";
//!     pub const QUEUE: &str = "logs.on_error";       // default: "<exchange>.<fn>"
//!     pub const NAME: &str = "on_error";
//!     pub struct OnErrorEvent;                       // naming rule: UpperCamel(fn) + "Event"
//!     impl ::lepus::__private::Event for OnErrorEvent { .. }
//!     pub fn handler() -> ::lepus::Handler;
//!     pub async fn publish(client, routing_key: &str, payload: &LogLine) -> Result<(), ::lepus::Error>;
//! }
//! ```

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::{Ident, ItemFn, LitStr};

use super::parse::{EventArgs, Kind};
use crate::rpc::expand::{inner_visibility, upper_camel};
use crate::rpc::validate::WireSignature;

/// The whole expansion.
pub(crate) fn expand(
    args: &EventArgs,
    function: &ItemFn,
    signature: &WireSignature,
) -> TokenStream {
    let name = &function.sig.ident;
    let plain = name.to_string().trim_start_matches("r#").to_owned();
    let handler_name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&plain, name.span()));
    let exchange = &args.exchange;
    let queue = args
        .queue
        .clone()
        .unwrap_or_else(|| LitStr::new(&format!("{}.{}", exchange.value(), plain), name.span()));
    let marker = format_ident!("{}Event", upper_camel(&plain), span = name.span());
    let vis = &function.vis;
    let inner = inner_visibility(vis);
    let doc = format!(
        " The `{}` event handler on exchange `{}`, and a typed publish to it.",
        plain,
        exchange.value()
    );
    let payload = match signature.args.first() {
        Some((_, ty)) => quote!(#ty),
        None => quote!(()),
    };
    let event_impl = gen_event_impl(args, function, signature, &marker, &queue, &handler_name);
    let limits = crate::task::attr::handler_limits(args.blocking, args.time_limit);
    let client = Ident::new("client", Span::mixed_site());
    let routing_key = Ident::new("routing_key", Span::mixed_site());
    let value = Ident::new("payload", Span::mixed_site());
    quote! {
        #function
        #[doc = #doc]
        #vis mod #name {
            #[allow(unused_imports)]
            use super::*;
            /// The exchange this handler listens to.
            #inner const EXCHANGE: &::core::primitive::str = #exchange;
            /// The handler's queue (pool delivery), or the stem of each instance's queue.
            #inner const QUEUE: &::core::primitive::str = #queue;
            /// The handler name.
            #inner const NAME: &::core::primitive::str = #handler_name;
            /// The `lepus::event::Event` implementation of this handler.
            #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy)]
            #inner struct #marker;
            #event_impl
            /// The handler to give a worker: `Worker::new(&conn).serve(handler())`.
            #inner fn handler() -> ::lepus::__private::Handler {
                ::lepus::__private::event_handler::<#marker>() #limits
            }
            /// Publishes an event to this handler's exchange (declared on first use) and waits
            /// for the broker's confirm.
            #inner async fn publish(
                #client: &::lepus::__private::Client,
                #routing_key: &::core::primitive::str,
                #value: &#payload,
            ) -> ::core::result::Result<(), ::lepus::__private::Error> {
                ::lepus::__private::publish_event::<#marker>(#client, #routing_key, #value).await
            }
        }
    }
}

/// `impl Event for OnErrorEvent`.
fn gen_event_impl(
    args: &EventArgs,
    function: &ItemFn,
    signature: &WireSignature,
    marker: &Ident,
    queue: &LitStr,
    handler_name: &LitStr,
) -> TokenStream {
    let exchange = &args.exchange;
    let kind = match args.kind {
        Kind::Fanout => quote!(Fanout),
        Kind::Direct => quote!(Direct),
        Kind::Topic => quote!(Topic),
    };
    let delivery = if args.broadcast {
        quote!(Broadcast)
    } else {
        quote!(Pool)
    };
    let bindings = &args.bindings;
    let payload = match signature.args.first() {
        Some((_, ty)) => quote!(#ty),
        None => quote!(()),
    };
    let err = match &signature.err {
        Some(err) => quote!(#err),
        None => quote!(::lepus::__private::Never),
    };
    let fn_name = &function.sig.ident;
    let input = Ident::new("payload", Span::mixed_site());
    let body = if signature.err.is_some() {
        quote! {
            match super::#fn_name(#input).await {
                ::core::result::Result::Ok(_) => ::core::result::Result::Ok(()),
                ::core::result::Result::Err(e) => ::core::result::Result::Err(e),
            }
        }
    } else {
        quote! {
            let _ = super::#fn_name(#input).await;
            ::core::result::Result::Ok(())
        }
    };
    quote! {
        impl ::lepus::__private::Event for #marker {
            const EXCHANGE: &'static ::core::primitive::str = #exchange;
            const KIND: ::lepus::__private::ExchangeType = ::lepus::__private::ExchangeType::#kind;
            const BINDINGS: &'static [&'static ::core::primitive::str] = &[ #(#bindings),* ];
            const DELIVERY: ::lepus::__private::DeliveryKind =
                ::lepus::__private::DeliveryKind::#delivery;
            const QUEUE: &'static ::core::primitive::str = #queue;
            const NAME: &'static ::core::primitive::str = #handler_name;
            type Payload = #payload;
            type Err = #err;

            fn invoke(
                #input: Self::Payload,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), Self::Err>,
            > + ::core::marker::Send + 'static {
                async move { #body }
            }
        }
    }
}
