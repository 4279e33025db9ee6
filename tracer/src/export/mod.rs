//! Exports of a recording for other tools.

pub mod chrome;
