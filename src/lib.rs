//! fulfilld: exactly-once fulfillment of Stripe Checkout Sessions.
//!
//! Layers, bottom up (each uses only those below it):
//! `time`, `money`, `report`, `signature`, `config`, `model`, `metrics` → `domain` (the rules, pure) →
//! `store`, `stripe` →
//! `fulfill` → `worker`, `webhook_log` → `views` → `notify` → `http` → `app` → `demo`.

pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod domain;
pub mod fulfill;
pub mod http;
pub mod log_limit;
pub mod metrics;
pub mod model;
pub mod money;
pub mod notify;
pub mod report;
pub mod retention;
pub mod signature;
pub mod store;
pub mod stripe;
pub mod time;
pub mod views;
pub mod webhook_log;
pub mod worker;
