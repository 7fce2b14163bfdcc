//! The generator helpers every attribute shares (`#[lepus::rpc]`, `#[lepus::task]`,
//! `#[lepus::event]`, `#[lepus::service]`): the marker struct, the argument tuple, the
//! compile-time wire checks, the error codec, and the injected parameters (`State<T>`,
//! `Context`) taken from the request's context. Every path is absolute, so the output
//! compiles under `#![no_implicit_prelude]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Ident, Type};

use crate::signature::{Param, WireSignature};

/// `pub fn handler()` of a marker's inherent impl: `make` (the runtime's constructor of the
/// marker's handler) followed by the attribute's `limits` calls (`.blocking(true)`, ...).
pub(crate) fn handler_fn(make: TokenStream, limits: &TokenStream) -> TokenStream {
    quote! {
        /// The handler to give a worker: `Worker::new(&conn).serve(handler())`.
        pub fn handler() -> ::lepus::__private::Handler {
            #make #limits
        }
    }
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

/// `err_codec` and `describe_err` of a `Method` impl: the codec and description of `Self::Err`
/// chosen by autoref specialization, where the type is concrete.
pub(crate) fn err_codec_fn() -> TokenStream {
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
fn unpack_args(signature: &WireSignature, args: &Ident) -> TokenStream {
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

/// The arguments of a call to the function itself, in order: each wire argument's variable,
/// each injected parameter's (by reference for `&Context`).
fn call_args(signature: &WireSignature) -> Vec<TokenStream> {
    signature
        .params
        .iter()
        .map(|param| match param {
            Param::Wire(index) => {
                let name = &signature.args[*index].0;
                quote!(#name)
            }
            Param::Injected(injected) => {
                let var = &injected.var;
                if injected.by_ref {
                    quote!(&#var)
                } else {
                    quote!(#var)
                }
            }
        })
        .collect()
}

/// `let injectedN = <Ty as Inject>::inject(cx)?;` for each injected parameter, spanned at its
/// type (where a type named `State` or `Context` that is not Lepus's is reported).
fn inject_lets(signature: &WireSignature, cx: &Ident) -> TokenStream {
    let lets = signature.injected().map(|injected| {
        let (ty, var) = (&injected.ty, &injected.var);
        let span = ty.span();
        let inject = quote_spanned!(span=> <#ty as ::lepus::__private::Inject>::inject);
        quote! { let #var = #inject(#cx)?; }
    });
    quote! {
        let _ = #cx;
        #(#lets)*
    }
}

/// `fn needs()` of an `Invoke`, `Task` or `Event` impl: the states the injected parameters
/// need (nothing when there are none: the trait's default says "none").
fn needs_fn(signature: &WireSignature) -> TokenStream {
    let types: Vec<&Type> = signature.injected().map(|i| &i.ty).collect();
    if types.is_empty() {
        return TokenStream::new();
    }
    quote! {
        fn needs() -> ::lepus::__private::Vec<::lepus::__private::Needed> {
            ::lepus::__private::needs([
                #(<#types as ::lepus::__private::Inject>::need()),*
            ])
        }
    }
}

/// What a generated call of the method `marker` returns:
/// `Result<<marker as Method>::Ok, Error<<marker as Method>::Err>>`.
pub(crate) fn call_result(marker: &impl ToTokens) -> TokenStream {
    quote! {
        ::core::result::Result<
            <#marker as ::lepus::__private::Method>::Ok,
            ::lepus::__private::Error<<#marker as ::lepus::__private::Method>::Err>,
        >
    }
}

/// A client function of a generated marker and its `_with` twin (`call` and `call_with`,
/// `enqueue` and `enqueue_with`, ...): both send the arguments through `entry`, the first with
/// the default options, the twin with the options its caller passes last.
pub(crate) struct ClientFns<'a> {
    /// The first function's name; the twin's is the same with `_with` appended.
    pub(crate) name: &'a str,
    /// The first function's doc (one line of `///` text, with its leading space).
    pub(crate) doc: &'a str,
    /// The twin's doc.
    pub(crate) doc_with: &'a str,
    /// The runtime function both call: `entry(client, (args..), options)`.
    pub(crate) entry: TokenStream,
    /// The type of the options (a `Default` type).
    pub(crate) options: TokenStream,
    /// What both return.
    pub(crate) output: TokenStream,
}

impl ClientFns<'_> {
    /// `name(client, args..)` and `name_with(client, args.., options)`.
    pub(crate) fn generate(&self, signature: &WireSignature) -> TokenStream {
        let ClientFns {
            name,
            doc,
            doc_with,
            entry,
            options: options_ty,
            output,
        } = self;
        let client = Ident::new("client", Span::mixed_site());
        let options = Ident::new("options", Span::mixed_site());
        let params = params(signature);
        let tuple = args_tuple_value(signature);
        let name_with = format_ident!("{name}_with");
        let name = format_ident!("{name}");
        quote! {
            #[doc = #doc]
            pub async fn #name(
                #client: &::lepus::__private::Client,
                #(#params),*
            ) -> #output {
                #entry(
                    #client,
                    #tuple,
                    <#options_ty as ::core::default::Default>::default(),
                )
                .await
            }

            #[doc = #doc_with]
            pub async fn #name_with(
                #client: &::lepus::__private::Client,
                #(#params,)*
                #options: #options_ty,
            ) -> #output {
                #entry(#client, #tuple, #options).await
            }
        }
    }
}

/// What a generated `invoke` takes besides the context.
pub(crate) enum InvokeInput {
    /// `receiver: &#ty, args: Self::Args` (an `Invoke` impl: `()` for a function, `Arc<S>` for
    /// a service's implementation); the arguments are unpacked.
    Receiver(TokenStream),
    /// `args: Self::Args` (a `Task` impl); the arguments are unpacked.
    Args,
    /// `#name: Self::Payload` (an `Event` impl): the payload, passed to the handler as it is.
    Payload(Ident),
}

/// `fn needs()` and `fn invoke(..)` of an `Invoke`, `Task` or `Event` impl whose future
/// resolves to `Result<#ok, Self::Err>`: the injected parameters taken from the context, the
/// wire arguments unpacked, then `Ok(async move { #future })`. `call` makes, from the
/// receiver's name and the arguments of the call to the handler, the statements that come
/// first (`prelude`, which may use the receiver) and the future's body.
pub(crate) fn invoke_fn(
    signature: &WireSignature,
    ok: TokenStream,
    input: InvokeInput,
    call: impl FnOnce(&Ident, &[TokenStream]) -> (TokenStream, TokenStream),
) -> TokenStream {
    let receiver = Ident::new("receiver", Span::mixed_site());
    let args = Ident::new("args", Span::mixed_site());
    let cx = Ident::new("cx", Span::mixed_site());
    let (inputs, unpack) = match input {
        InvokeInput::Receiver(ty) => (
            quote! { #receiver: &#ty, #args: Self::Args, },
            unpack_args(signature, &args),
        ),
        InvokeInput::Args => (quote! { #args: Self::Args, }, unpack_args(signature, &args)),
        InvokeInput::Payload(name) => (quote! { #name: Self::Payload, }, TokenStream::new()),
    };
    let inject = inject_lets(signature, &cx);
    let (prelude, future) = call(&receiver, &call_args(signature));
    let needs = needs_fn(signature);
    let output = invoke_output(ok);
    quote! {
        #needs

        fn invoke(
            #inputs
            #cx: &::lepus::__private::Context,
        ) -> #output {
            #prelude
            #inject
            #unpack
            ::core::result::Result::Ok(async move { #future })
        }
    }
}

/// The return type of every generated `invoke`: the handler's future (`Send + 'static`, run
/// by the worker) resolving to `Result<#ok, Self::Err>`, or the state it is missing.
fn invoke_output(ok: TokenStream) -> TokenStream {
    quote! {
        ::core::result::Result<
            impl ::core::future::Future<
                Output = ::core::result::Result<#ok, Self::Err>,
            > + ::core::marker::Send + 'static,
            ::lepus::__private::MissingState,
        >
    }
}
