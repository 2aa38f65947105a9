//! The conformance suite every backend runs (work in progress).
