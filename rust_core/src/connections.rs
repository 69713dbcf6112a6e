//! Which TCP connection each ZeroMQ routing identity speaks over, so that a container whose
//! connection is lost is dropped at once, not at the heartbeat timeout.
//!
//! libzmq tells the ROUTER's monitor when it accepts a connection and when one is lost
//! (`ZMQ_EVENT_ACCEPTED` and `ZMQ_EVENT_DISCONNECTED`, each with the connection's file
//! descriptor), and every message received carries the descriptor of the connection it came over
//! (the `ZMQ_SRCFD` property). This module joins the two: per descriptor, whether its connection is
//! open and which identity was heard on it. Bookkeeping only: the engine loop reads the socket
//! and the monitor and drops replicas.
//!
//! What it relies on (libzmq 4.3): for one connection, its `ACCEPTED` event is sent to the monitor
//! before any of its messages reach the socket, and its `DISCONNECTED` event after the last of them
//! and before its descriptor is closed, so before the descriptor can be reused by a later connection.
//! The caller reads every pending monitor event before it trusts a pair (descriptor, identity) it
//! has not seen yet ([`Connections::heard`]); then each `DISCONNECTED` is for the connection
//! of the identity recorded on that descriptor, or for a later one.

use std::os::fd::RawFd;

use foldhash::HashMap;

/// What a message's descriptor says about the connection that sent it (see [`Connections::heard`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Heard {
    /// The connection is open.
    Live,
    /// The connection is open, and the identity recorded on its descriptor before belongs to an
    /// earlier connection, now closed.
    Replaced(Vec<u8>),
    /// The connection is closed (the message was read after the loss was reported).
    Gone,
}

#[derive(Debug)]
struct Descriptor {
    open: bool,
    /// The identity heard on the connection open on this descriptor, once one has been.
    identity: Option<Vec<u8>>,
}

#[derive(Default)]
pub(crate) struct Connections {
    descriptors: HashMap<RawFd, Descriptor>,
}

impl Connections {
    /// The monitor reports a new connection on `fd`. The connection open there before, if its loss
    /// was not reported (libzmq reports no loss when it closes a connection itself, e.g. at a
    /// handover), is closed all the same: the identity heard on it, if any.
    pub(crate) fn accepted(&mut self, fd: RawFd) -> Option<Vec<u8>> {
        self.descriptors.insert(fd, Descriptor { open: true, identity: None })?.identity
    }

    /// The monitor reports the loss of the connection on `fd`: the identity heard on it, if any.
    pub(crate) fn disconnected(&mut self, fd: RawFd) -> Option<Vec<u8>> {
        let descriptor = self.descriptors.entry(fd).or_insert(Descriptor { open: false, identity: None });
        descriptor.open = false;
        descriptor.identity.take()
    }

    /// A message from `identity` came over the connection on `fd`; every monitor event reported
    /// before it has been given to [`Connections::accepted`] and [`Connections::disconnected`].
    ///
    /// Its connection was accepted on `fd`, so it is either the connection open there now, or an
    /// earlier one on the same descriptor, now closed, whose message was read late. When two
    /// identities are heard on one open descriptor, the later connection is the one with the later
    /// identity: libzmq numbers the anonymous identities it gives peers in the order it attaches
    /// them (from a random start, wrapping). An identity a peer chose itself has no order: then the
    /// one recorded first is kept.
    pub(crate) fn heard(&mut self, fd: RawFd, identity: &[u8]) -> Heard {
        let Some(descriptor) = self.descriptors.get_mut(&fd) else {
            // Never reported by the monitor (it is not running): nothing to go by.
            return Heard::Live;
        };
        if !descriptor.open {
            return Heard::Gone;
        }
        match &descriptor.identity {
            None => {
                descriptor.identity = Some(identity.to_vec());
                Heard::Live
            }
            Some(known) if known == identity => Heard::Live,
            Some(known) => match (sequence(known), sequence(identity)) {
                // Serial-number order: the identities alive at once are close in the sequence.
                (Some(earlier), Some(later)) if (later.wrapping_sub(earlier) as i32) > 0 => {
                    Heard::Replaced(descriptor.identity.replace(identity.to_vec()).expect("checked above"))
                }
                _ => Heard::Gone,
            },
        }
    }
}

/// The number libzmq gave an anonymous peer: its identity is a zero byte and a big-endian u32 counter.
fn sequence(identity: &[u8]) -> Option<u32> {
    match identity {
        [0, n @ ..] => Some(u32::from_be_bytes(n.try_into().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anonymous(n: u32) -> Vec<u8> {
        let mut identity = vec![0];
        identity.extend_from_slice(&n.to_be_bytes());
        identity
    }

    #[test]
    fn the_identity_heard_on_a_connection_is_named_when_it_is_lost() {
        let mut c = Connections::default();
        assert_eq!(c.accepted(7), None);
        assert_eq!(c.disconnected(7), None, "nobody was heard on it");
        c.accepted(7);
        assert_eq!(c.heard(7, &anonymous(1)), Heard::Live);
        assert_eq!(c.heard(7, &anonymous(1)), Heard::Live);
        c.accepted(8);
        assert_eq!(c.heard(8, &anonymous(2)), Heard::Live);
        assert_eq!(c.disconnected(7), Some(anonymous(1)));
        assert_eq!(c.disconnected(7), None, "named once");
        assert_eq!(c.disconnected(8), Some(anonymous(2)));
    }

    #[test]
    fn a_message_read_after_its_connection_was_lost_is_from_the_past() {
        let mut c = Connections::default();
        c.accepted(7);
        assert_eq!(c.heard(7, &anonymous(1)), Heard::Live);
        c.disconnected(7);
        assert_eq!(c.heard(7, &anonymous(1)), Heard::Gone, "its own connection is closed");
        // Never heard before the loss (it registered and died before the engine read a thing).
        c.accepted(9);
        c.disconnected(9);
        assert_eq!(c.heard(9, &anonymous(2)), Heard::Gone);
    }

    #[test]
    fn a_reused_descriptor_belongs_to_the_later_connection() {
        let mut c = Connections::default();
        c.accepted(7);
        assert_eq!(c.heard(7, &anonymous(1)), Heard::Live);
        c.disconnected(7);
        c.accepted(7);
        assert_eq!(c.heard(7, &anonymous(2)), Heard::Live);
        assert_eq!(c.heard(7, &anonymous(1)), Heard::Gone, "the earlier connection's late message");
        assert_eq!(c.disconnected(7), Some(anonymous(2)));
    }

    #[test]
    fn a_new_connection_on_a_descriptor_ends_the_one_before_even_unreported() {
        let mut c = Connections::default();
        c.accepted(7);
        assert_eq!(c.heard(7, &anonymous(1)), Heard::Live);
        assert_eq!(c.accepted(7), Some(anonymous(1)));
        assert_eq!(c.heard(7, &anonymous(2)), Heard::Live);
        assert_eq!(c.disconnected(7), Some(anonymous(2)));
        assert_eq!(c.accepted(7), None, "its loss was reported");
    }

    #[test]
    fn a_late_message_that_claimed_a_reused_descriptor_gives_it_up_to_the_later_identity() {
        let mut c = Connections::default();
        // Connection 1 spoke and was lost, then connection 2 was accepted on the same descriptor,
        // before the engine read connection 1's message.
        c.accepted(7);
        c.disconnected(7);
        c.accepted(7);
        assert_eq!(c.heard(7, &anonymous(1)), Heard::Live, "cannot be told apart yet");
        assert_eq!(c.heard(7, &anonymous(2)), Heard::Replaced(anonymous(1)));
        assert_eq!(c.heard(7, &anonymous(1)), Heard::Gone);
        assert_eq!(c.disconnected(7), Some(anonymous(2)));
    }

    #[test]
    fn the_order_of_anonymous_identities_wraps() {
        let mut c = Connections::default();
        c.accepted(7);
        assert_eq!(c.heard(7, &anonymous(u32::MAX)), Heard::Live);
        assert_eq!(c.heard(7, &anonymous(0)), Heard::Replaced(anonymous(u32::MAX)));
        assert_eq!(c.heard(7, &anonymous(u32::MAX)), Heard::Gone);
    }

    #[test]
    fn identities_chosen_by_peers_keep_the_first_one_heard() {
        let mut c = Connections::default();
        c.accepted(7);
        assert_eq!(c.heard(7, b"container-a"), Heard::Live);
        assert_eq!(c.heard(7, &anonymous(1)), Heard::Gone);
        assert_eq!(c.heard(7, b"container-b"), Heard::Gone);
        assert_eq!(c.heard(7, b"container-a"), Heard::Live);
    }

    #[test]
    fn descriptors_the_monitor_never_reported_are_not_judged() {
        let mut c = Connections::default();
        assert_eq!(c.heard(3, &anonymous(1)), Heard::Live);
        assert_eq!(c.heard(3, &anonymous(2)), Heard::Live);
    }

    #[test]
    fn anonymous_identities_are_numbered_big_endian() {
        assert_eq!(sequence(&[0, 0, 0, 1, 0]), Some(256));
        assert_eq!(sequence(&anonymous(0x8000_0001)), Some(0x8000_0001));
        assert_eq!(sequence(b"\x00abc"), None);
        assert_eq!(sequence(b"named"), None);
    }
}
