//! A trace: everything a client observed while one broker ran a program, rendered as text in
//! a canonical order, so that two traces are compared line by line.
//!
//! Per operation: the operation, its reply (the method the broker answered with, or the
//! channel/connection close and its code), then the asynchronous events observed before the
//! broker settled (deliveries, returns, confirms, cancels, closes), then the state of every
//! queue the program declared (messages ready / consumers, or the code a passive declare got).
//!
//! Events have no defined order across channels, connections, or consumers of one channel
//! (RabbitMQ's queues are separate processes), so they are grouped by a key — `c<conn>.<ch>`
//! plus the consumer tag or the kind of event — and the groups sorted; within a group the
//! arrival order is kept, because there it is defined (one queue's deliveries to one consumer,
//! returns of one channel). Delivery tags are compared as the set each channel used in the
//! step, for the same reason.

use std::fmt::Write as _;

/// What one operation observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpTrace {
    /// The operation's text.
    pub op: String,
    /// Its reply.
    pub reply: String,
    /// `(group key, line)` in arrival order.
    pub events: Vec<(String, String)>,
    /// The queue states after the broker settled.
    pub queues: String,
    /// Set when what follows is not defined by RabbitMQ (the reason): the comparison ends at
    /// this step's reply.
    pub undefined: Option<String>,
}

impl OpTrace {
    /// The lines of this step: events sorted by group (stable within a group).
    pub fn lines(&self) -> Vec<String> {
        let mut events = self.events.clone();
        events.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::with_capacity(events.len() + 2);
        out.push(format!("  = {}", self.reply));
        out.extend(events.into_iter().map(|(_, line)| format!("  {line}")));
        // No trailing space, so that a stored expectation survives editors.
        let queues = if self.queues.is_empty() {
            "-"
        } else {
            &self.queues
        };
        out.push(format!("  queues: {queues}"));
        if let Some(why) = &self.undefined {
            out.push(format!("  ! {why}"));
        }
        out
    }
}

/// Everything one run observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// One entry per operation.
    pub ops: Vec<OpTrace>,
    /// The final state: each queue's remaining messages, which exchanges exist.
    pub end: Vec<String>,
}

impl Trace {
    /// The whole trace as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, op) in self.ops.iter().enumerate() {
            let _ = writeln!(out, "#{i} {}", op.op);
            for line in op.lines() {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = writeln!(out, "end");
        for line in &self.end {
            let _ = writeln!(out, "  {line}");
        }
        out
    }

    /// Parses [`Trace::render`]'s output back (the expected side of a regression test).
    pub fn parse(text: &str) -> Trace {
        let mut trace = Trace::default();
        let mut in_end = false;
        for line in text.lines() {
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                continue;
            }
            if trimmed == "end" {
                in_end = true;
                continue;
            }
            if in_end {
                trace.end.push(trimmed.trim_start().to_owned());
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix('#') {
                let op = rest.split_once(' ').map_or("", |(_, op)| op);
                trace.ops.push(OpTrace {
                    op: op.to_owned(),
                    ..OpTrace::default()
                });
                continue;
            }
            let Some(cur) = trace.ops.last_mut() else {
                continue;
            };
            let body = trimmed.trim_start();
            if let Some(reply) = body.strip_prefix("= ") {
                cur.reply = reply.to_owned();
            } else if body == "queues: -" || body == "queues:" {
                cur.queues = String::new();
            } else if let Some(q) = body.strip_prefix("queues: ") {
                cur.queues = q.to_owned();
            } else if let Some(why) = body.strip_prefix("! ") {
                cur.undefined = Some(why.to_owned());
            } else {
                // Already in canonical order: one group keeps them in order.
                cur.events.push((String::new(), body.to_owned()));
            }
        }
        trace
    }
}

/// Where two traces first differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The operation whose step differs (`None`: the final state).
    pub op_index: Option<usize>,
    /// The operation's text.
    pub op: String,
    /// The step as the reference (RabbitMQ) saw it.
    pub reference: Vec<String>,
    /// The step as the broker under test saw it.
    pub tested: Vec<String>,
}

impl Divergence {
    /// A short class for grouping divergences of a campaign: the operation's method and the
    /// first differing lines with numbers and message ids blanked.
    pub fn signature(&self) -> String {
        let verb = self.op.split_whitespace().nth(1).unwrap_or("end");
        // The first line only the reference has, and the first only the tested broker has
        // (queue-state lines apart); then the queues whose states differ.
        let only = |a: &[String], b: &[String]| {
            a.iter()
                .find(|l| !l.trim().starts_with("queues:") && !b.contains(l))
                .map(|l| blank(l))
                .unwrap_or_default()
        };
        let queues = |lines: &[String]| -> Vec<String> {
            lines
                .iter()
                .find_map(|l| l.trim().strip_prefix("queues: "))
                .map(|q| q.split(' ').map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let (qa, qb) = (queues(&self.reference), queues(&self.tested));
        let differing = |x: &[String], y: &[String]| {
            blank(
                &x.iter()
                    .filter(|e| !y.contains(e))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        };
        format!(
            "{verb}: {} | {} | queues {} | {}",
            only(&self.reference, &self.tested),
            only(&self.tested, &self.reference),
            differing(&qa, &qb),
            differing(&qb, &qa)
        )
    }

    /// The step side by side, for a report.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let what = match self.op_index {
            Some(i) => format!("operation #{i}: {}", self.op),
            None => "the final state".to_owned(),
        };
        let _ = writeln!(out, "first difference at {what}");
        let _ = writeln!(out, "RabbitMQ (reference):");
        for l in &self.reference {
            let mark = if self.tested.contains(l) { " " } else { "-" };
            let _ = writeln!(out, "{mark}{l}");
        }
        let _ = writeln!(out, "Lepus (tested):");
        for l in &self.tested {
            let mark = if self.reference.contains(l) { " " } else { "+" };
            let _ = writeln!(out, "{mark}{l}");
        }
        out
    }
}

/// Replaces digit runs with `N` and caps the length (signature of a line).
fn blank(line: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for ch in line.trim().chars() {
        if ch.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(ch);
        }
    }
    out.chars().take(100).collect()
}

/// Compares two traces (`reference` is RabbitMQ's); `None` when they agree.
pub fn compare(reference: &Trace, tested: &Trace) -> Option<Divergence> {
    let n = reference.ops.len().max(tested.ops.len());
    for i in 0..n {
        let (a, b) = (reference.ops.get(i), tested.ops.get(i));
        if a.is_some_and(|o| o.undefined.is_some()) || b.is_some_and(|o| o.undefined.is_some()) {
            // Undefined from here: only this step's reply is compared.
            let (ra, rb) = (a.map(|o| &o.reply), b.map(|o| &o.reply));
            if ra != rb {
                return Some(Divergence {
                    op_index: Some(i),
                    op: a.or(b).map(|o| o.op.clone()).unwrap_or_default(),
                    reference: a.map(OpTrace::lines).unwrap_or_default(),
                    tested: b.map(OpTrace::lines).unwrap_or_default(),
                });
            }
            return None;
        }
        let la = a.map(OpTrace::lines).unwrap_or_default();
        let lb = b.map(OpTrace::lines).unwrap_or_default();
        if la != lb || a.map(|o| &o.op) != b.map(|o| &o.op) {
            return Some(Divergence {
                op_index: Some(i),
                op: a.or(b).map(|o| o.op.clone()).unwrap_or_default(),
                reference: la,
                tested: lb,
            });
        }
    }
    if reference.end != tested.end {
        return Some(Divergence {
            op_index: None,
            op: String::new(),
            reference: reference.end.clone(),
            tested: tested.end.clone(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(reply: &str, events: &[(&str, &str)]) -> OpTrace {
        OpTrace {
            op: "c0.1 queue.unbind q0 -> amq.direct key=\"a\"".into(),
            reply: reply.into(),
            events: events
                .iter()
                .map(|(k, l)| (k.to_string(), l.to_string()))
                .collect(),
            queues: "q0=0/0".into(),
            undefined: None,
        }
    }

    #[test]
    fn events_of_different_groups_compare_in_any_order_but_not_within_a_group() {
        let a = Trace {
            ops: vec![step(
                "ok",
                &[("c0.1 ct0", "m1"), ("c0.1 ct1", "m2"), ("c0.1 ct0", "m3")],
            )],
            end: vec![],
        };
        let b = Trace {
            ops: vec![step(
                "ok",
                &[("c0.1 ct1", "m2"), ("c0.1 ct0", "m1"), ("c0.1 ct0", "m3")],
            )],
            end: vec![],
        };
        assert_eq!(compare(&a, &b), None);
        let c = Trace {
            ops: vec![step(
                "ok",
                &[("c0.1 ct0", "m3"), ("c0.1 ct1", "m2"), ("c0.1 ct0", "m1")],
            )],
            end: vec![],
        };
        let d = compare(&a, &c).expect("order within one consumer matters");
        assert_eq!(d.op_index, Some(0));
    }

    #[test]
    fn a_different_reply_is_reported_with_a_signature_and_survives_render_and_parse() {
        let reference = Trace {
            ops: vec![step("queue.unbind-ok", &[])],
            end: vec!["q0: empty".into()],
        };
        let tested = Trace {
            ops: vec![step("channel.close 404 NOT_FOUND (50,50)", &[])],
            end: vec!["q0: empty".into()],
        };
        let d = compare(&reference, &tested).expect("differs");
        assert_eq!(
            d.signature(),
            "queue.unbind: = queue.unbind-ok | = channel.close N NOT_FOUND (N,N) | queues  | "
        );
        let back = Trace::parse(&reference.render());
        assert_eq!(compare(&back, &reference), None);
        assert!(compare(&back, &tested).is_some());
    }
}
