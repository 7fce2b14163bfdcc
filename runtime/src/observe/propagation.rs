//! W3C trace context on the wire: the [`HEADER_TRACEPARENT`] and [`HEADER_TRACESTATE`]
//! headers of every request, task and event, written where a message leaves (`inject`) and
//! read where a worker starts a span for it (`continue_from`).
//!
//! Header values (AMQP long strings, `S`; short strings are read too), as W3C Trace Context
//! (<https://www.w3.org/TR/trace-context/>) puts them in HTTP:
//! ```text
//! traceparent: 00-<trace-id: 32 lowercase hex>-<parent span id: 16 lowercase hex>-<flags: 2 hex>
//! tracestate:  vendor=value,... (at most 32 members)
//! ```
//! With the `otel` feature and an OpenTelemetry layer installed, the sending span's context is
//! written (OpenTelemetry's own `TraceContextPropagator`), and the worker's span becomes a
//! child of it. Without them, a handler still forwards the trace context it received, unchanged,
//! on what it sends onward, so a trace crosses a service that does not export spans.
//!
//! Bounds: a `traceparent` longer than [`MAX_TRACEPARENT`] bytes or a `tracestate` longer
//! than [`MAX_TRACESTATE`] is ignored (not parsed, not forwarded); a malformed one is ignored
//! too. The message's properties are bounded as a whole before this (see `worker/limits`).

use lapin::types::{AMQPValue, FieldTable, LongString};
use tracing::Span;

/// The W3C `traceparent` header: the trace id and the sending span's id.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header: vendors' trace data, carried along.
pub const HEADER_TRACESTATE: &str = "tracestate";

/// The longest `traceparent` read (version 00 is 55 bytes; later versions may append fields).
pub(crate) const MAX_TRACEPARENT: usize = 256;
/// The longest `tracestate` read: the 512 bytes W3C asks every platform to propagate.
pub(crate) const MAX_TRACESTATE: usize = 512;

/// The value of header `name` of `headers`, when it is a string of at most `max` bytes.
fn bounded<'a>(headers: &'a FieldTable, name: &str, max: usize) -> Option<&'a [u8]> {
    let value = match headers.inner().get(name)? {
        AMQPValue::LongString(s) => s.as_bytes(),
        AMQPValue::ShortString(s) => s.as_str().as_bytes(),
        _ => return None,
    };
    (value.len() <= max).then_some(value)
}

/// True when `value` is a well-formed `traceparent` of a sampled-or-not, valid trace: version
/// 00 exactly (55 bytes), or a later version with at least those fields; ids lowercase hex and
/// not all zeros; version `ff` is invalid.
pub(crate) fn is_valid_traceparent(value: &[u8]) -> bool {
    if value.len() < 55 || (value.len() > 55 && value.get(55) != Some(&b'-')) {
        return false;
    }
    let hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let (version, trace_id, span_id, flags) =
        (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
    let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
    dashes
        && hex(version)
        && version != b"ff"
        && (version != b"00" || value.len() == 55)
        && hex(trace_id)
        && trace_id.iter().any(|&b| b != b'0')
        && hex(span_id)
        && span_id.iter().any(|&b| b != b'0')
        && hex(flags)
}

/// The trace context a delivery carries, validated: `(traceparent, tracestate)`, forwarded
/// unchanged by a handler that exports no spans of its own.
pub(crate) fn received(headers: Option<&FieldTable>) -> Option<(LongString, Option<LongString>)> {
    let headers = headers?;
    let parent = bounded(headers, HEADER_TRACEPARENT, MAX_TRACEPARENT)?;
    if !is_valid_traceparent(parent) {
        return None;
    }
    let state = bounded(headers, HEADER_TRACESTATE, MAX_TRACESTATE)
        .filter(|s| s.iter().all(|b| (0x20..0x7f).contains(b)))
        .map(|s| LongString::from(s.to_vec()));
    Some((LongString::from(parent.to_vec()), state))
}

/// Writes the trace context of the current span into `headers` (see the module
/// documentation); else forwards `received`, the context the current handler was given.
pub(crate) fn inject(
    headers: &mut FieldTable,
    received: Option<&(LongString, Option<LongString>)>,
) {
    #[cfg(feature = "otel")]
    if otel::inject_current(headers) {
        return;
    }
    if let Some((parent, state)) = received {
        headers.insert(
            HEADER_TRACEPARENT.into(),
            AMQPValue::LongString(parent.clone()),
        );
        if let Some(state) = state {
            headers.insert(
                HEADER_TRACESTATE.into(),
                AMQPValue::LongString(state.clone()),
            );
        }
    }
}

/// Makes `span` (just created, not yet entered) a child of the remote span whose context
/// `headers` carry; no-op without the `otel` feature or a valid `traceparent`.
pub(crate) fn continue_from(span: &Span, headers: Option<&FieldTable>) {
    #[cfg(feature = "otel")]
    otel::continue_from(span, headers);
    #[cfg(not(feature = "otel"))]
    let _ = (span, headers);
}

#[cfg(feature = "otel")]
mod otel {
    use lapin::types::{AMQPValue, FieldTable};
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{
        bounded, is_valid_traceparent, HEADER_TRACEPARENT, HEADER_TRACESTATE, MAX_TRACEPARENT,
        MAX_TRACESTATE,
    };

    /// Reads the two headers, bounded and validated, for the propagator.
    struct Carrier<'a>(&'a FieldTable);

    impl Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            let value = match key {
                HEADER_TRACEPARENT => {
                    bounded(self.0, key, MAX_TRACEPARENT).filter(|v| is_valid_traceparent(v))?
                }
                HEADER_TRACESTATE => bounded(self.0, key, MAX_TRACESTATE)?,
                _ => return None,
            };
            std::str::from_utf8(value).ok()
        }

        fn keys(&self) -> Vec<&str> {
            vec![HEADER_TRACEPARENT, HEADER_TRACESTATE]
        }
    }

    /// Writes the propagator's headers as long strings.
    struct CarrierMut<'a>(&'a mut FieldTable);

    impl Injector for CarrierMut<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0
                .insert(key.into(), AMQPValue::LongString(value.into()));
        }
    }

    /// Injects the current span's context; false when it has none (no OpenTelemetry layer).
    pub(super) fn inject_current(headers: &mut FieldTable) -> bool {
        let span = Span::current();
        if span.is_disabled() {
            return false;
        }
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return false;
        }
        TraceContextPropagator::new().inject_context(&cx, &mut CarrierMut(headers));
        true
    }

    pub(super) fn continue_from(span: &Span, headers: Option<&FieldTable>) {
        let Some(headers) = headers else { return };
        if span.is_disabled() || !headers.inner().contains_key(HEADER_TRACEPARENT) {
            return;
        }
        let cx = TraceContextPropagator::new().extract(&Carrier(headers));
        if cx.span().span_context().is_valid() {
            // Fails only without an OpenTelemetry layer (nothing to parent) or once the span
            // started, which it has not: it was just created.
            let _ = span.set_parent(cx);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_validation_follows_the_w3c_grammar() {
        assert!(is_valid_traceparent(GOOD.as_bytes()));
        let later = format!("01{}-extra", &GOOD[2..]);
        assert!(is_valid_traceparent(later.as_bytes()));
        for bad in [
            "",
            &GOOD[..54],
            &format!("{GOOD}-x"),              // 00 has no more fields
            &GOOD.replace("4bf92f", "4BF92F"), // uppercase
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
            &format!("ff{}", &GOOD[2..]),      // version ff
            &GOOD.replace('-', "_"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(!is_valid_traceparent(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn received_context_is_bounded_and_validated() {
        let mut headers = FieldTable::default();
        assert!(received(Some(&headers)).is_none());
        headers.insert(
            HEADER_TRACEPARENT.into(),
            AMQPValue::LongString(GOOD.into()),
        );
        headers.insert(
            HEADER_TRACESTATE.into(),
            AMQPValue::LongString("a=1".into()),
        );
        let (parent, state) = received(Some(&headers)).unwrap();
        assert_eq!(parent.as_bytes(), GOOD.as_bytes());
        assert_eq!(state.unwrap().as_bytes(), b"a=1");
        // An oversized tracestate is dropped, the traceparent kept.
        let huge = "k=v,".repeat(1_000);
        headers.insert(
            HEADER_TRACESTATE.into(),
            AMQPValue::LongString(huge.as_str().into()),
        );
        assert!(received(Some(&headers)).unwrap().1.is_none());
        // Anything but a string, or an oversized or malformed traceparent, is ignored.
        for value in [
            AMQPValue::LongLongInt(1),
            AMQPValue::LongString("x".repeat(10_000).as_str().into()),
            AMQPValue::LongString("garbage".into()),
        ] {
            headers.insert(HEADER_TRACEPARENT.into(), value);
            assert!(received(Some(&headers)).is_none());
        }
    }

    #[test]
    fn inject_forwards_what_was_received_without_a_span() {
        let mut headers = FieldTable::default();
        inject(&mut headers, None);
        assert!(headers.inner().is_empty());
        let context = (LongString::from(GOOD), Some(LongString::from("a=1")));
        inject(&mut headers, Some(&context));
        assert_eq!(
            headers.inner().get(HEADER_TRACEPARENT),
            Some(&AMQPValue::LongString(GOOD.into()))
        );
        assert_eq!(
            headers.inner().get(HEADER_TRACESTATE),
            Some(&AMQPValue::LongString("a=1".into()))
        );
    }
}
