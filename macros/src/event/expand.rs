//! Emits the items of `#[lepus::event]`, one generator function per item.
//!
//! For `async fn on_error(line: LogLine)` listening to topic exchange `logs`:
//! ```text
//! async fn on_error(line: LogLine) { .. }          // unchanged: callable locally
//! struct on_error {}                               // type namespace only (see `rpc::expand`)
//! impl on_error {
//!     pub const EXCHANGE: &str = "logs";
//!     pub const QUEUE: &str = "logs.on_error";       // default: "<exchange>.<fn>"
//!     pub const NAME: &str = "on_error";
//!     pub fn handler() -> ::lepus::Handler;
//!     pub async fn publish(client, routing_key: &str, payload: &LogLine) -> Result<(), ::lepus::Error>;
//! }
//! impl ::lepus::__private::Event for on_error { .. }
//! ```
//! A handler fails when `<R as Returns>` says so (an `Err` of `Result` or any alias of it).

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::{Ident, ItemFn, LitStr};

use super::parse::{EventArgs, Kind};
use crate::generate::{
    handler_fn, invoke_fn, marker_struct, returns_projections, wire_assertions, InvokeInput,
    WireUse,
};
use crate::signature::WireSignature;

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
    let queue = match &args.queue {
        Some(queue) => queue.to_token_stream(),
        None => {
            LitStr::new(&format!("{}.{}", exchange.value(), plain), name.span()).to_token_stream()
        }
    };
    let doc = format!(
        " The `{}` event handler on exchange `{}`, and a typed publish to it; also the \
         `lepus::event::Event` implementation of this handler.",
        plain,
        exchange.value()
    );
    let payload = match signature.args.first() {
        Some((_, ty)) => quote!(#ty),
        None => quote!(()),
    };
    let marker = marker_struct(name, &function.vis, &doc);
    let event_impl = gen_event_impl(args, function, signature, &handler_name);
    let limits = crate::task::attr::handler_limits(args.blocking, args.time_limit);
    let handler = handler_fn(
        quote!(::lepus::__private::event_handler::<#name>()),
        &limits,
    );
    let checks = match &args.queue {
        Some(queue) => queue.check(quote!(<#name>::QUEUE)),
        None => TokenStream::new(),
    };
    let wire_checks = wire_assertions(signature, WireUse::Decoded);
    let client = Ident::new("client", Span::mixed_site());
    let routing_key = Ident::new("routing_key", Span::mixed_site());
    let value = Ident::new("payload", Span::mixed_site());
    quote! {
        #function
        #marker
        impl #name {
            /// The exchange this handler listens to.
            pub const EXCHANGE: &'static ::core::primitive::str = #exchange;
            /// The handler's queue (pool delivery), or the stem of each instance's queue.
            pub const QUEUE: &'static ::core::primitive::str = #queue;
            /// The handler name.
            pub const NAME: &'static ::core::primitive::str = #handler_name;
            #handler
            /// Publishes an event to this handler's exchange (declared on first use) and waits
            /// for the broker's confirm.
            pub async fn publish(
                #client: &::lepus::__private::Client,
                #routing_key: &::core::primitive::str,
                #value: &#payload,
            ) -> ::core::result::Result<(), ::lepus::__private::Error> {
                ::lepus::__private::publish_event::<#name>(#client, #routing_key, #value).await
            }
        }
        #event_impl
        #checks
        #wire_checks
    }
}

/// `impl Event for on_error`.
fn gen_event_impl(
    args: &EventArgs,
    function: &ItemFn,
    signature: &WireSignature,
    handler_name: &LitStr,
) -> TokenStream {
    let name = &function.sig.ident;
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
    let (_, err) = returns_projections(&signature.ret);
    let input = match signature.args.first() {
        Some((name, _)) => name.clone(),
        None => Ident::new("payload", Span::mixed_site()),
    };
    // The payload is the handler's one argument, passed as it is: nothing to unpack.
    let invoke = invoke_fn(
        signature,
        quote!(()),
        InvokeInput::Payload(input),
        |_, call_args| {
            (
                TokenStream::new(),
                quote! {
                    match ::lepus::__private::Returns::into_result(#name( #(#call_args),* ).await) {
                        ::core::result::Result::Ok(_) => ::core::result::Result::Ok(()),
                        ::core::result::Result::Err(e) => ::core::result::Result::Err(e),
                    }
                },
            )
        },
    );
    quote! {
        impl ::lepus::__private::Event for #name {
            const EXCHANGE: &'static ::core::primitive::str = <#name>::EXCHANGE;
            const KIND: ::lepus::__private::ExchangeType = ::lepus::__private::ExchangeType::#kind;
            const BINDINGS: &'static [&'static ::core::primitive::str] = &[ #(#bindings),* ];
            const DELIVERY: ::lepus::__private::DeliveryKind =
                ::lepus::__private::DeliveryKind::#delivery;
            const QUEUE: &'static ::core::primitive::str = <#name>::QUEUE;
            const NAME: &'static ::core::primitive::str = #handler_name;
            type Payload = #payload;
            type Err = #err;

            #invoke
        }
    }
}
