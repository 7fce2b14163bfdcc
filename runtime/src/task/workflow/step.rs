//! One step of a workflow: a task call as it travels inside another task's headers ([`Step`]),
//! the typed builders of steps the macro hands out ([`Signature`], [`Partial`]), and the
//! MessagePack splicing that turns a step's result into the next step's first argument.
//!
//! # Byte layout of a step's arguments
//! A task's arguments travel as a MessagePack array (see `envelope::encode_request`). A
//! [`Partial`] step carries the array of the arguments it was given, the first one left out;
//! the worker that ran the previous step builds the next step's body as
//! 1. an array header of length `n + 1` (`0x90 | len` below 16, `0xdc` + u16 BE, `0xdd` + u32 BE);
//! 2. the previous step's output, as its task encoded it (one MessagePack value);
//! 3. the `n` elements of the partial step's array, unchanged.
//!
//! So the worker never needs the types of the steps after its own. Not implemented: keyword
//! arguments, and a result placed anywhere but first.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::task::Task;
use crate::worker::QueueOptions;

/// One task call of a workflow on the wire (MessagePack inside the `x-lepus-chain` header and
/// inside a chord's token message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Step {
    /// The task queue, with the client's queue prefix once submitted.
    pub(crate) queue: String,
    /// The task name (`x-lepus-method`).
    pub(crate) task: String,
    /// The arguments as a MessagePack array (without the first one when `partial`).
    pub(crate) args: Vec<u8>,
    /// The previous step's result is the first argument.
    pub(crate) partial: bool,
    /// The step's `message_id` (chosen at submit): a step published twice after a crash has
    /// the same id both times.
    pub(crate) id: String,
}

/// What the submitting client declares before any step runs: each step's task queue, with its
/// task's options, so that the worker publishing a step never meets a missing queue.
#[derive(Debug, Clone)]
pub(crate) struct Declare {
    pub(crate) queue: String,
    pub(crate) options: QueueOptions,
}

impl Step {
    /// Whether the names this step puts into AMQP short strings (its queue as a routing key,
    /// its id as the message id) fit in 255 bytes. Steps are read back from headers and token
    /// messages that anyone able to publish to the queue can write: a longer one is refused,
    /// where lapin's conversion would panic.
    pub(crate) fn fits_short_strings(&self) -> bool {
        self.queue.len() <= 255 && self.id.len() <= 255
    }

    /// The body of this step's task message: its arguments, with `previous` (one encoded
    /// MessagePack value) put first when the step is partial.
    pub(crate) fn body(&self, previous: Option<&[u8]>) -> Result<Vec<u8>, String> {
        match (self.partial, previous) {
            (false, _) => Ok(self.args.clone()),
            (true, Some(previous)) => prepend(previous, &self.args),
            (true, None) => Err(format!(
                "step {} waits for a previous result and has none",
                self.task
            )),
        }
    }
}

/// A task call with all its arguments: `add::signature(2, 3)`. Becomes a one-step
/// [`Chain`](super::Chain), a group member, or a chain's first step.
pub struct Signature<T> {
    pub(crate) step: Result<Step, String>,
    pub(crate) declare: Declare,
    task: PhantomData<fn() -> T>,
}

impl<T: Task> Signature<T> {
    /// The call of `T` with `args` (the generated `send_email::signature(..)` calls this).
    pub fn new(args: T::Args) -> Self {
        Signature {
            step: encode(&args).map(|args| Step {
                queue: T::QUEUE.to_owned(),
                task: T::NAME.to_owned(),
                args,
                partial: false,
                id: String::new(),
            }),
            declare: declare_of::<T>(),
            task: PhantomData,
        }
    }
}

clone_for_any!(Signature<T> { step, declare }, task);

impl<T> std::fmt::Debug for Signature<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signature")
            .field("step", &self.step)
            .finish()
    }
}

/// A task call whose first argument (of type `A`) is the previous step's result:
/// `mul::partial(10)` in `chain(add::signature(2, 3)).then(mul::partial(10))` runs
/// `mul(5, 10)`. A chain only accepts it after a step whose output is `A`.
pub struct Partial<T, A> {
    pub(crate) step: Result<Step, String>,
    pub(crate) declare: Declare,
    task: PhantomData<fn(A) -> T>,
}

impl<T: Task, A> Partial<T, A> {
    /// The call of `T` with `rest`, every argument but the first, as a tuple (the generated
    /// `send_email::partial(..)` calls this).
    pub fn new<R: Serialize>(rest: R) -> Self {
        Partial {
            step: encode(&rest).map(|args| Step {
                queue: T::QUEUE.to_owned(),
                task: T::NAME.to_owned(),
                args,
                partial: true,
                id: String::new(),
            }),
            declare: declare_of::<T>(),
            task: PhantomData,
        }
    }
}

impl<T, A> Clone for Partial<T, A> {
    fn clone(&self) -> Self {
        Partial {
            step: self.step.clone(),
            declare: self.declare.clone(),
            task: PhantomData,
        }
    }
}

impl<T, A> std::fmt::Debug for Partial<T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partial").field("step", &self.step).finish()
    }
}

fn declare_of<T: Task>() -> Declare {
    Declare {
        queue: T::QUEUE.to_owned(),
        options: T::options().queue_options(),
    }
}

fn encode<A: Serialize>(args: &A) -> Result<Vec<u8>, String> {
    crate::envelope::encode_request(args).map_err(|e| format!("arguments do not encode: {e}"))
}

/// Writes a MessagePack array header of `len` elements.
pub(crate) fn write_array_header(buf: &mut Vec<u8>, len: usize) -> Result<(), String> {
    if len < 16 {
        // Proof: len < 16 fits the fixarray's four bits.
        buf.push(0x90 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        buf.push(0xdc);
        buf.extend_from_slice(&len.to_be_bytes());
    } else {
        let len = u32::try_from(len).map_err(|_| "array too long for MessagePack".to_owned())?;
        buf.push(0xdd);
        buf.extend_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// The element count of a MessagePack array and the bytes of its elements.
pub(crate) fn array_parts(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    match first {
        0x90..=0x9f => Some((usize::from(first & 0x0f), rest)),
        0xdc => {
            let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
            Some((usize::from(len), rest.get(2..)?))
        }
        0xdd => {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
            Some((usize::try_from(len).ok()?, rest.get(4..)?))
        }
        _ => None,
    }
}

/// `[first, args[0], args[1], ..]` from `first` (one value) and `args` (an array).
pub(crate) fn prepend(first: &[u8], args: &[u8]) -> Result<Vec<u8>, String> {
    let (len, elements) = array_parts(args)
        .ok_or_else(|| "a partial step's arguments are not an array".to_owned())?;
    let mut body = Vec::with_capacity(first.len() + elements.len() + 5);
    write_array_header(&mut body, len + 1)?;
    body.extend_from_slice(first);
    body.extend_from_slice(elements);
    Ok(body)
}

/// An array of already-encoded values, in order.
pub(crate) fn array_of<'a>(
    values: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    write_array_header(&mut body, values.len())?;
    for value in values {
        body.extend_from_slice(value);
    }
    Ok(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_result_becomes_the_first_argument() {
        for rest_len in [0usize, 1, 14, 15, 16, 70_000] {
            let rest: Vec<u32> = (0..rest_len as u32).collect();
            let args = crate::envelope::encode_request(&rest).unwrap();
            let first = crate::envelope::encode_request(&"prev").unwrap();
            let body = prepend(&first, &args).unwrap();
            let (head, tail) = decode_split(&body);
            assert_eq!(head, "prev");
            assert_eq!(tail, rest);
        }
        // Byte literals: [7] plus a previous 1 gives [1, 7].
        assert_eq!(
            prepend(&[0x01], &[0x91, 0x07]).unwrap(),
            vec![0x92, 0x01, 0x07]
        );
        assert_eq!(prepend(&[0x01], &[0x90]).unwrap(), vec![0x91, 0x01]);
        assert!(prepend(&[0x01], &[0x07]).is_err());
        assert!(prepend(&[0x01], &[0xdc, 0x00]).is_err());
    }

    /// Decodes `[first, rest..]` as `(first, rest)`.
    fn decode_split(body: &[u8]) -> (String, Vec<u32>) {
        let (len, elements) = array_parts(body).unwrap();
        let mut de = rmp_serde::Deserializer::new(elements);
        let first: String = serde::Deserialize::deserialize(&mut de).unwrap();
        let rest: Vec<u32> = (1..len)
            .map(|_| serde::Deserialize::deserialize(&mut de).unwrap())
            .collect();
        (first, rest)
    }

    #[test]
    fn arrays_of_encoded_values() {
        let items: Vec<Vec<u8>> = (0..20u32)
            .map(|i| crate::envelope::encode_request(&i).unwrap())
            .collect();
        let body = array_of(items.iter().map(Vec::as_slice)).unwrap();
        let back: Vec<u32> = rmp_serde::from_slice(&body).unwrap();
        assert_eq!(back, (0..20).collect::<Vec<_>>());
    }
}
