//! Store-level tests.
