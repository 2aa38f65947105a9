//! Copy-on-write heap backend (work in progress).
