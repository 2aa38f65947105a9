#![doc = include_str!("../README.md")]

mod config;
mod env;
pub mod options;
mod parse;
mod resolve;

pub use config::{BackendType, StateConfig};
pub use env::{ENV_PREFIX, env_var_name};
pub use options::{OPTIONS, OptionDef, OptionType, markdown_table};
