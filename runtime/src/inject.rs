//! [`Inject`]: the handler parameters a worker fills in instead of decoding them from the
//! message: [`State<T>`](crate::State) and [`Context`].
//!
//! The macros recognise these parameters by their type's name (`State<..>`, `Context`,
//! `&Context`) and take them through this trait, so a parameter named so that is not Lepus's
//! own is a compile error that says so, never silently a wire argument.

use crate::context::Context;
use crate::state::{MissingState, Needed, State};

/// A handler parameter filled in by the worker (see the module documentation).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a parameter Lepus can fill in",
    label = "parameters whose type is named `State<..>` or `Context` are injected by the worker, not decoded",
    note = "use `lepus::State<T>` (shared state given with `Worker::state`) or `lepus::Context` (the request's context); \
            for an argument of your own type with that name, import it under another name (`use my::State as MyState;`)"
)]
pub trait Inject: Sized {
    /// The state this parameter needs (checked when a worker starts).
    fn need() -> Option<Needed>;

    /// The value for one request.
    fn inject(cx: &Context) -> Result<Self, MissingState>;
}

impl Inject for Context {
    fn need() -> Option<Needed> {
        None
    }

    fn inject(cx: &Context) -> Result<Self, MissingState> {
        Ok(cx.clone())
    }
}

impl<T: Clone + Send + Sync + 'static> Inject for State<T> {
    fn need() -> Option<Needed> {
        Some(Needed::of::<T>())
    }

    fn inject(cx: &Context) -> Result<Self, MissingState> {
        match cx.states().get::<T>() {
            Some(value) => Ok(State(value.clone())),
            None => Err(MissingState {
                type_name: std::any::type_name::<T>(),
            }),
        }
    }
}

/// The states among a handler's injected parameters (what the generated `needs()` returns).
pub fn needs<const N: usize>(needs: [Option<Needed>; N]) -> Vec<Needed> {
    needs.into_iter().flatten().collect()
}
