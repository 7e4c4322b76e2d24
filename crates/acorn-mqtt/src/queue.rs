//! The bounded, ordered offline queue of QoS 1 messages waiting to be sent.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use crate::limits::QoS;

/// Identifies one publish request for the life of a session (never reused).
///
/// The transport has its own MQTT packet ids; the driver maps its packet id to this id when
/// it reports a PUBACK with [`crate::Event::PublishAcked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublishId(pub u64);

/// A message held by the session until it is acknowledged (QoS 1) or sent (QoS 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The session's id for this message.
    pub id: PublishId,
    /// Topic name (already checked against AWS limits).
    pub topic: String,
    /// Payload (already checked against AWS limits).
    pub payload: Vec<u8>,
    /// QoS 0 or 1.
    pub qos: QoS,
    /// Session time (ms) after which the message is dropped instead of sent; `None` = never.
    pub expires_at_ms: Option<u64>,
    /// Whether it was sent before (on an earlier connection) and is being re-sent.
    pub retransmit: bool,
}

impl OutgoingMessage {
    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| now_ms >= t)
    }
}

/// Oldest-first queue with a capacity; pushing onto a full queue drops the oldest message.
#[derive(Debug, Clone)]
pub(crate) struct OfflineQueue {
    items: VecDeque<OutgoingMessage>,
    capacity: usize,
}

impl OfflineQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        OfflineQueue {
            items: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends; returns the messages dropped to stay within capacity (oldest first).
    pub(crate) fn push_back(&mut self, msg: OutgoingMessage) -> Vec<OutgoingMessage> {
        self.items.push_back(msg);
        self.trim()
    }

    /// Puts messages (in their order) before everything queued: unacknowledged in-flight
    /// messages going back to the queue at a disconnect. Returns those dropped by capacity.
    pub(crate) fn push_front_all(&mut self, msgs: Vec<OutgoingMessage>) -> Vec<OutgoingMessage> {
        for msg in msgs.into_iter().rev() {
            self.items.push_front(msg);
        }
        self.trim()
    }

    /// Removes the message with this id, if it is queued.
    pub(crate) fn remove(&mut self, id: PublishId) -> Option<OutgoingMessage> {
        let pos = self.items.iter().position(|m| m.id == id)?;
        self.items.remove(pos)
    }

    pub(crate) fn pop_front(&mut self) -> Option<OutgoingMessage> {
        self.items.pop_front()
    }

    /// Removes every expired message, returning them.
    pub(crate) fn take_expired(&mut self, now_ms: u64) -> Vec<OutgoingMessage> {
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(self.items.len());
        for msg in self.items.drain(..) {
            if msg.expired(now_ms) {
                expired.push(msg);
            } else {
                kept.push_back(msg);
            }
        }
        self.items = kept;
        expired
    }

    fn trim(&mut self) -> Vec<OutgoingMessage> {
        let mut dropped = Vec::new();
        while self.items.len() > self.capacity {
            match self.items.pop_front() {
                Some(msg) => dropped.push(msg),
                None => break,
            }
        }
        dropped
    }
}
