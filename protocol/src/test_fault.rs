//! Deliberate client faults, for proving that the test suite can fail.
//!
//! A client built with the `test-faults` feature misbehaves in the one way its config's
//! `test_fault` names; without the feature [`crate::Client`] never looks at
//! it and the checks compile away. The simulator runs every scenario against every fault
//! (`mqtt-sim faults`) and reports which scenario catches which behaviour, and which
//! behaviour nothing catches.

/// One way to break the client. Each names the behaviour it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TestFault {
    /// Forgets the oldest unacknowledged publish instead of resending it, and reports it
    /// delivered.
    DropRepublish,
    /// Resends unacknowledged publishes without the DUP flag.
    ResendWithoutDup,
    /// Resends unacknowledged publishes under new packet ids.
    ResendNewPacketId,
    /// Resends unacknowledged publishes newest first.
    ResendReversed,
    /// Waits out a full backoff when the link returns instead of reconnecting at once.
    NoRetryOnLinkUp,
    /// Never sends PINGREQ.
    NoPing,
    /// Does not re-subscribe after a reconnect that lost the session.
    NoResubscribe,
    /// Delivers a redelivered QoS 2 message to the application again.
    Qos2DeliverTwice,
    /// On a full incoming queue discards the newest message instead of the oldest.
    DiscardNewest,
    /// `disconnect()` closes the socket without sending DISCONNECT (the will fires).
    DisconnectWithoutPacket,
    /// Starts every connection clean, ignoring `clean = false`.
    AlwaysClean,
    /// Uses `clean` for the first connection too, ignoring `clean_init`.
    IgnoreCleanInit,
    /// Leaves the will out of CONNECT.
    NoWill,
    /// Keeps using the previous connection's outgoing topic aliases after a reconnect.
    KeepTopicAliases,
    /// Retries a failed connection at once, every time (no backoff).
    NoBackoff,
    /// With `backpressure`, reads on and discards the oldest anyway.
    IgnoreBackpressure,
    /// With `backpressure`, keeps response deadlines running while input is held back, so
    /// an answer queued behind unread messages counts as missing.
    DeadlinesWhileHeld,
    /// Fills its own in-flight window, ignoring the Receive Maximum the broker announced.
    IgnoreReceiveMaximum,
    /// Keeps its own keepalive, ignoring the Server Keep Alive the broker announced.
    IgnoreServerKeepalive,
    /// Leaves the Will Delay Interval out of CONNECT (the will fires at once).
    NoWillDelay,
    /// Reports a server DISCONNECT as 0x80 (unspecified error) instead of its reason code.
    MisreportReasonCode,
    /// Never fails a publish whose deadline passed while it waited unsent.
    IgnoreDeadline,
    /// Subscribes without the No Local option the application asked for (MQTT 5).
    IgnoreNoLocal,
    /// Subscribes without the Retain As Published option the application asked for (MQTT 5).
    IgnoreRetainAsPublished,
    /// Subscribes with Retain Handling 0 whatever the application asked for (MQTT 5).
    IgnoreRetainHandling,
    /// With a store: records are written but never synced, so nothing is durable when a
    /// token returns (a power cut takes back everything since the last sync).
    NoSync,
    /// With a store: an acknowledgement forgets the next message's record, not its own.
    ForgetWrongRecord,
    /// With a store: recovered publishes lose their packet ids (resent as new messages).
    IdsNotRestored,
    /// With a store: incoming QoS 2 ids are not recorded (a reboot forgets them).
    IncomingNotStored,
    /// With several brokers: keeps trying the one that failed, never the next.
    NoFailover,
    /// Waits out the full response time and the grown backoff for a broker that does not
    /// answer, instead of probing for it every `PROBE_MS`.
    NoProbe,
    /// Reports a publish the broker refused (a PUBACK or PUBREC failure code) as delivered.
    IgnorePubackFailure,
    /// Takes a filter the broker refused (a SUBACK failure code) as granted: reports it
    /// subscribed, and renews it after a reconnect.
    IgnoreSubackFailure,
    /// `cancel` says yes and does nothing: the publish goes out and its token completes.
    IgnoreCancel,
    /// Forgets the client id the broker assigned (MQTT 5) and reconnects with an empty one,
    /// so every reconnect starts a new session.
    ForgetAssignedId,
    /// Sends publishes without the Message Expiry Interval the application set (MQTT 5), so
    /// a stale message waits for an offline subscriber for ever.
    DropMessageExpiry,
    /// Acknowledges an incoming QoS 1/2 message when it arrives instead of when the
    /// application takes it, so a failed instance loses what it held.
    AckOnArrival,
}

impl TestFault {
    /// Every fault with its name (kebab-case, as the simulator's `--client-fault` takes it).
    pub const ALL: &'static [(&'static str, TestFault)] = &[
        ("drop-republish", TestFault::DropRepublish),
        ("resend-without-dup", TestFault::ResendWithoutDup),
        ("resend-new-packet-id", TestFault::ResendNewPacketId),
        ("resend-reversed", TestFault::ResendReversed),
        ("no-retry-on-link-up", TestFault::NoRetryOnLinkUp),
        ("no-ping", TestFault::NoPing),
        ("no-resubscribe", TestFault::NoResubscribe),
        ("qos2-deliver-twice", TestFault::Qos2DeliverTwice),
        ("discard-newest", TestFault::DiscardNewest),
        ("disconnect-without-packet", TestFault::DisconnectWithoutPacket),
        ("always-clean", TestFault::AlwaysClean),
        ("ignore-clean-init", TestFault::IgnoreCleanInit),
        ("no-will", TestFault::NoWill),
        ("keep-topic-aliases", TestFault::KeepTopicAliases),
        ("no-backoff", TestFault::NoBackoff),
        ("ignore-backpressure", TestFault::IgnoreBackpressure),
        ("deadlines-while-held", TestFault::DeadlinesWhileHeld),
        ("ignore-receive-maximum", TestFault::IgnoreReceiveMaximum),
        ("ignore-server-keepalive", TestFault::IgnoreServerKeepalive),
        ("no-will-delay", TestFault::NoWillDelay),
        ("misreport-reason-code", TestFault::MisreportReasonCode),
        ("ignore-deadline", TestFault::IgnoreDeadline),
        ("ignore-no-local", TestFault::IgnoreNoLocal),
        ("no-sync", TestFault::NoSync),
        ("forget-wrong-record", TestFault::ForgetWrongRecord),
        ("ids-not-restored", TestFault::IdsNotRestored),
        ("incoming-not-stored", TestFault::IncomingNotStored),
        ("no-failover", TestFault::NoFailover),
        ("no-probe", TestFault::NoProbe),
        ("ignore-puback-failure", TestFault::IgnorePubackFailure),
        ("ignore-suback-failure", TestFault::IgnoreSubackFailure),
        ("ignore-cancel", TestFault::IgnoreCancel),
        ("forget-assigned-id", TestFault::ForgetAssignedId),
        ("drop-message-expiry", TestFault::DropMessageExpiry),
        ("ignore-retain-as-published", TestFault::IgnoreRetainAsPublished),
        ("ignore-retain-handling", TestFault::IgnoreRetainHandling),
        ("ack-on-arrival", TestFault::AckOnArrival),
    ];

    /// The fault of a kebab-case name.
    pub fn from_name(name: &str) -> Option<TestFault> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// Its kebab-case name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }
}

/// The CONNECT user property a host sets to pick the fault of a `test-faults` build (the
/// component's config has no field for it: the shipped contract stays as it is).
pub const USER_PROPERTY: &str = "x-mqtt-as-test-fault";
