//! The device core, driven by a simulated transport and clock: every inbound message kind,
//! presses and their cooldown, `online` after the SUBACK or at once, resubscription,
//! `reconnect`, settings persistence, shutdown, health, and a property test over random
//! event sequences.

mod support;

mod connection;
mod health;
mod heartbeat;
mod inbound;
mod persistence;
mod presses;
mod properties;
mod queue;
mod rotation;
mod shutdown;
