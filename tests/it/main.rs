//! One integration-test binary: the real app on port 0 against a Stripe test
//! double and a merchant receiver over HTTP on loopback.

mod helpers;

mod abuse;
mod admin;
mod api;
mod browser;
mod crash;
mod delivery;
mod demo;
mod exactly_once;
mod landing;
mod layers;
mod lifecycle;
mod limits;
mod notifications;
mod ops;
mod pg;
mod processes;
mod races;
mod replicas;
mod storage;
mod stripe_faults;
mod webhook;
