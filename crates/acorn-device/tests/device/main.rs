//! The device core, driven by a simulated transport and clock: every inbound message kind,
//! presses and their cooldown, `online` after the SUBACK or at once, resubscription,
//! `reconnect`, settings persistence, shutdown, health, certificate rotation (and a power cut
//! at every flash operation of one), and a property test over random event sequences.

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
mod rotation_power_cut;
mod shutdown;
