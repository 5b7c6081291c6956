//! fulfilld: exactly-once fulfillment of Stripe Checkout Sessions.
//!
//! Layers, bottom up (each uses only those below it):
//! `time`, `money`, `signature`, `config`, `model` → `store`, `stripe` →
//! `fulfill` → `worker` → `views` → `http` → `app`.

pub mod config;
pub mod model;
pub mod money;
pub mod signature;
pub mod store;
pub mod time;
pub mod stripe;
pub mod fulfill;
pub mod worker;
pub mod views;
pub mod http;
pub mod app;
