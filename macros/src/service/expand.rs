//! Emits the items of `#[lepus::service]`, one generator function per item.
//!
//! For `#[lepus::service(queue = "accounts")] pub trait Accounts { async fn get_balance(&self,
//! account: String) -> Result<u64, AccountError>; }`:
//! ```text
//! pub trait Accounts: Send + Sync + 'static {             // the contract, each method's
//!     fn get_balance(&self, account: String)              // future `Send` (a worker runs it
//!         -> impl Future<Output = Result<u64, AccountError>> + Send;   // on any thread)
//! }
//! pub struct AccountsClient { .. }                       // the typed client: contract only
//! impl AccountsClient {
//!     pub const QUEUE: &str = "accounts";
//!     pub fn new(client: &Client) -> Self;
//!     pub fn with_options(&self, options: CallOptions) -> Self;
//!     pub fn client(&self) -> &Client;
//!     pub async fn get_balance(&self, account: String) -> Result<u64, lepus::Error<AccountError>>;
//! }
//! pub struct AccountsServer<S> { .. }                    // serves any `S: Accounts`
//! impl<S: Accounts> AccountsServer<S> { new(S), from_arc(Arc<S>), on_queue(..), handlers() }
//! impl<S: Accounts> IntoHandlers for AccountsServer<S> { .. }   // `Worker::serve(server)`
//! pub struct Accounts_get_balance {}                     // one marker per method (hidden)
//! impl Method for Accounts_get_balance { .. }             // what a caller needs
//! impl<S: Accounts> Invoke<Arc<S>> for Accounts_get_balance { .. }   // how a worker runs it
//! ```
//! Naming rule: `{Trait}Client`, `{Trait}Server`, `{Trait}_{method}`. A method travels exactly
//! as a `#[lepus::rpc(queue = "accounts")] async fn get_balance(account: String)` would: the
//! same request and reply (see `lepus::envelope`), so the two forms interoperate.
//!
//! `#[cfg]` attributes of a method go on everything generated for it; its other attributes
//! (docs) go on the trait method and the client method.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Ident, ItemTrait};

use super::parse::{ContractMethod, ServiceArgs};
use crate::generate::{
    args_tuple_type, args_tuple_value, call_result, err_codec_fn, invoke_fn, params,
    returns_projections, wire_assertions, InvokeInput, WireUse,
};

/// Everything the generators need.
struct Model<'a> {
    args: &'a ServiceArgs,
    contract: &'a ItemTrait,
    methods: &'a [ContractMethod],
    client: Ident,
    server: Ident,
}

/// The whole expansion.
pub(crate) fn expand(
    args: &ServiceArgs,
    contract: &ItemTrait,
    methods: &[ContractMethod],
) -> TokenStream {
    let name = &contract.ident;
    let model = Model {
        args,
        contract,
        methods,
        client: format_ident!("{}Client", name),
        server: format_ident!("{}Server", name),
    };
    let contract_trait = gen_trait(&model);
    let client = gen_client(&model);
    let server = gen_server(&model);
    let markers = methods.iter().map(|m| gen_method(&model, m));
    let client_ident = &model.client;
    let checks = args.queue.check(quote!(<#client_ident>::QUEUE));
    let wire_checks = methods
        .iter()
        .map(|m| wire_assertions(&m.signature, WireUse::Both));
    quote! {
        #contract_trait
        #client
        #server
        #(#markers)*
        #checks
        #(#wire_checks)*
    }
}

/// The method's marker type: `{Trait}_{method}`.
fn marker(model: &Model<'_>, method: &ContractMethod) -> Ident {
    let plain = method.item.sig.ident.to_string();
    format_ident!(
        "{}_{}",
        model.contract.ident,
        plain.trim_start_matches("r#"),
        span = method.item.sig.ident.span()
    )
}

/// The method's `#[cfg]` attributes.
fn cfgs(method: &ContractMethod) -> Vec<&Attribute> {
    method
        .item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect()
}

/// The contract trait: each `async fn` becomes a `fn` returning a `Send` future (a worker runs
/// it on any thread), and the trait is `Send + Sync + 'static` (one implementation serves every
/// request from an `Arc`). An `impl` still writes `async fn`.
fn gen_trait(model: &Model<'_>) -> TokenStream {
    let contract = model.contract;
    let (attrs, vis, name) = (&contract.attrs, &contract.vis, &contract.ident);
    let supertraits = &contract.supertraits;
    let plus = if supertraits.is_empty() || supertraits.trailing_punct() {
        quote!()
    } else {
        quote!(+)
    };
    let methods = model.methods.iter().map(|method| {
        let mut sig = method.item.sig.clone();
        sig.asyncness = None;
        let ret = &method.signature.ret;
        let span = ret.span();
        sig.output = syn::parse_quote_spanned! {span=>
            -> impl ::core::future::Future<Output = #ret> + ::core::marker::Send
        };
        let attrs = &method.item.attrs;
        quote! {
            #(#attrs)*
            #sig;
        }
    });
    let doc = format!(
        " Served on AMQP queue {} by `{}::new(implementation)`; called through `{}`.",
        model.args.queue.describe(),
        model.server,
        model.client,
    );
    quote! {
        #(#attrs)*
        ///
        #[doc = #doc]
        #vis trait #name: #supertraits #plus ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#methods)*
        }
    }
}

/// `{Trait}Client`: the typed client, built on a `lepus::Client`.
fn gen_client(model: &Model<'_>) -> TokenStream {
    let (vis, name, client_ty) = (&model.contract.vis, &model.contract.ident, &model.client);
    let queue = &model.args.queue;
    let doc = format!(
        " Calls the `{}` service on the workers serving queue {}: a typed method per method of \
         the contract, through any `lepus::Client` (cheap to clone). Needs only the contract: \
         no implementation, no broker.",
        name,
        queue.describe(),
    );
    let methods = model.methods.iter().map(|m| gen_client_method(model, m));
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug, ::core::clone::Clone)]
        #vis struct #client_ty {
            client: ::lepus::__private::Client,
            options: ::lepus::__private::CallOptions,
        }

        impl #client_ty {
            /// The queue the service is served on (the client's queue prefix applies).
            pub const QUEUE: &'static ::core::primitive::str = #queue;

            /// A client of the service making its calls through `client`.
            pub fn new(client: &::lepus::__private::Client) -> Self {
                #client_ty {
                    client: ::core::clone::Clone::clone(client),
                    options: <::lepus::__private::CallOptions as ::core::default::Default>::default(),
                }
            }

            /// The same client with per-call options for every call it makes (a timeout, a
            /// priority, another queue: `CallOptions::queue` for a service served with
            /// `on_queue`).
            pub fn with_options(&self, options: ::lepus::__private::CallOptions) -> Self {
                #client_ty {
                    client: ::core::clone::Clone::clone(&self.client),
                    options,
                }
            }

            /// The `lepus::Client` the calls go through.
            pub fn client(&self) -> &::lepus::__private::Client {
                &self.client
            }

            #(#methods)*
        }
    }
}

/// One typed method of the client.
fn gen_client_method(model: &Model<'_>, method: &ContractMethod) -> TokenStream {
    let marker = marker(model, method);
    let name = &method.item.sig.ident;
    let params = params(&method.signature);
    let tuple = args_tuple_value(&method.signature);
    let attrs = method
        .item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc") || a.path().is_ident("cfg"));
    let doc = format!(
        " Calls `{}` (method `{}`) on a worker and waits for its result: the method's own `Err` \
         as `lepus::Error::Remote`, the client's options (timeout, ...) applied; inside a \
         handler, what is left of its deadline at most.",
        name,
        method.wire_name.value(),
    );
    let output = call_result(&marker);
    quote! {
        #(#attrs)*
        ///
        #[doc = #doc]
        pub async fn #name(
            &self,
            #(#params),*
        ) -> #output {
            ::lepus::__private::Client::call::<#marker>(
                &self.client,
                #tuple,
                ::core::clone::Clone::clone(&self.options),
            )
            .await
        }
    }
}

/// `{Trait}Server<S>`: one handler per method, all running on the same `Arc<S>`.
fn gen_server(model: &Model<'_>) -> TokenStream {
    let (vis, name, server) = (&model.contract.vis, &model.contract.ident, &model.server);
    let handlers = model.methods.iter().map(|method| {
        let marker = marker(model, method);
        let cfgs = cfgs(method);
        let limits = method.limits.or(model.args.limits);
        let limits =
            crate::task::attr::handler_limits(limits.blocking.unwrap_or(false), limits.time_limit);
        quote! {
            #(#cfgs)*
            handlers.push(::lepus::__private::Handler::with_receiver::<
                #marker,
                ::lepus::__private::Arc<S>,
            >(::core::clone::Clone::clone(&self.service))#limits);
        }
    });
    let doc = format!(
        " Serves an implementation of `{}` on a worker: \
         `Worker::new(&conn).serve({}::new(implementation))`. Every method is a handler on the \
         service's queue, all of them running on one shared implementation (its `&self`).",
        name, server,
    );
    quote! {
        #[doc = #doc]
        #vis struct #server<S> {
            service: ::lepus::__private::Arc<S>,
            queue: ::core::option::Option<::std::string::String>,
        }

        impl<S: #name> #server<S> {
            /// Serves `service`.
            pub fn new(service: S) -> Self {
                Self::from_arc(::lepus::__private::Arc::new(service))
            }

            /// Serves a shared `service` (also used elsewhere in the process).
            pub fn from_arc(service: ::lepus::__private::Arc<S>) -> Self {
                #server {
                    service,
                    queue: ::core::option::Option::None,
                }
            }

            /// Serves it on `queue` instead of the contract's (the worker's queue prefix still
            /// applies); callers reach it with `CallOptions::queue`.
            pub fn on_queue(
                mut self,
                queue: impl ::core::convert::Into<::std::string::String>,
            ) -> Self {
                self.queue = ::core::option::Option::Some(::core::convert::Into::into(queue));
                self
            }

            /// The implementation being served.
            pub fn service(&self) -> &::lepus::__private::Arc<S> {
                &self.service
            }

            /// One handler per method of the service.
            pub fn handlers(&self) -> ::lepus::__private::Vec<::lepus::__private::Handler> {
                let mut handlers = ::lepus::__private::Vec::new();
                #(#handlers)*
                match &self.queue {
                    ::core::option::Option::Some(queue) => ::core::iter::Iterator::collect(
                        ::core::iter::Iterator::map(
                            ::core::iter::IntoIterator::into_iter(handlers),
                            |handler: ::lepus::__private::Handler| {
                                handler.on_queue(::core::clone::Clone::clone(queue))
                            },
                        ),
                    ),
                    ::core::option::Option::None => handlers,
                }
            }
        }

        impl<S: #name> ::lepus::__private::IntoHandlers for #server<S> {
            fn into_handlers(self) -> ::lepus::__private::Vec<::lepus::__private::Handler> {
                self.handlers()
            }
        }

        impl<S> ::core::clone::Clone for #server<S> {
            fn clone(&self) -> Self {
                #server {
                    service: ::core::clone::Clone::clone(&self.service),
                    queue: ::core::clone::Clone::clone(&self.queue),
                }
            }
        }

        impl<S> ::core::fmt::Debug for #server<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server))
                    .field("queue", &self.queue)
                    .finish_non_exhaustive()
            }
        }
    }
}

/// The marker of one method, its `Method` impl (what callers need) and its `Invoke` impl (how
/// a worker runs it on the implementation).
fn gen_method(model: &Model<'_>, method: &ContractMethod) -> TokenStream {
    let (vis, name, client) = (&model.contract.vis, &model.contract.ident, &model.client);
    let marker = marker(model, method);
    let cfgs = cfgs(method);
    let wire_name = &method.wire_name;
    let signature = &method.signature;
    let args_ty = args_tuple_type(signature);
    let (ok, err) = returns_projections(&signature.ret);
    let codec = err_codec_fn();
    let method_name = &method.item.sig.ident;
    let service = Ident::new("service", proc_macro2::Span::mixed_site());
    let span = method_name.span();
    let call = quote_spanned! {span=> <S as #name>::#method_name };
    let invoke = invoke_fn(
        signature,
        quote!(Self::Ok),
        InvokeInput::Receiver(quote!(::lepus::__private::Arc<S>)),
        |receiver, call_args| {
            (
                quote! { let #service = ::core::clone::Clone::clone(#receiver); },
                quote! {
                    ::lepus::__private::Returns::into_result(
                        #call(&*#service, #(#call_args),*).await,
                    )
                },
            )
        },
    );
    let doc = format!(
        " Method `{}` of the `{}` service (the `lepus::Method` its client calls).",
        wire_name.value(),
        name
    );
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy)]
        #vis struct #marker {}

        #(#cfgs)*
        impl ::lepus::__private::Method for #marker {
            const QUEUE: &'static ::core::primitive::str = <#client>::QUEUE;
            const NAME: &'static ::core::primitive::str = #wire_name;
            type Args = #args_ty;
            type Ok = #ok;
            type Err = #err;

            #codec
        }

        #(#cfgs)*
        impl<S: #name> ::lepus::__private::Invoke<::lepus::__private::Arc<S>> for #marker {
            #invoke
        }
    }
}
