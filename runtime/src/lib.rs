//! `lepus-runtime`: the runtime of Lepus (work in progress; see issue 3).
