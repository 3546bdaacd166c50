//! `autograph-device`: the kiosk runtime. Loads a model bundle, embeds signatures with tract,
//! and keeps enrolled writers in a fixed-capacity gallery. Never depends on burn.

pub mod capture;
pub mod commands;
pub mod crypt;
pub mod decision;
pub mod engine;
pub mod replay;
pub mod store;
