//! `lepus-macros`: the attribute macros of Lepus (work in progress; see issue 3).
