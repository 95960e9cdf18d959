//! Conversions between the WIT types and `mqtt-protocol`'s.

use alloc::string::String;

use mqtt_protocol::{
    Config, DownReason, Event, LinkState, OutgoingPublish, Properties, PropertyValues, QoS, SentId, SocketError, Stats, SubscribeFilter, SubscribeProperties,
    TlsParams, Will,
};

use crate::api;
use crate::mqtt_as::client::{packet_ids, socket, wifi};

pub fn link_from_wit(s: wifi::LinkState) -> LinkState {
    match s {
        wifi::LinkState::Down => LinkState::Down,
        wifi::LinkState::Connecting => LinkState::Connecting,
        wifi::LinkState::Up => LinkState::Up,
    }
}

fn link_to_wit(s: LinkState) -> wifi::LinkState {
    match s {
        LinkState::Down => wifi::LinkState::Down,
        LinkState::Connecting => wifi::LinkState::Connecting,
        LinkState::Up => wifi::LinkState::Up,
    }
}

pub fn socket_error(e: socket::SocketError) -> SocketError {
    use socket::SocketError as W;
    match e {
        W::Refused => SocketError::Refused,
        W::Reset => SocketError::Reset,
        W::TimedOut => SocketError::TimedOut,
        W::Unreachable => SocketError::Unreachable,
        W::DnsFailed => SocketError::DnsFailed,
        W::TlsFailed => SocketError::TlsFailed,
        W::Closed => SocketError::Closed,
        W::NotPermitted => SocketError::NotPermitted,
        W::BadHandle => SocketError::BadHandle,
        W::Other => SocketError::Other,
    }
}

fn socket_error_to_wit(e: SocketError) -> socket::SocketError {
    use socket::SocketError as W;
    match e {
        SocketError::Refused => W::Refused,
        SocketError::Reset => W::Reset,
        SocketError::TimedOut => W::TimedOut,
        SocketError::Unreachable => W::Unreachable,
        SocketError::DnsFailed => W::DnsFailed,
        SocketError::TlsFailed => W::TlsFailed,
        SocketError::Closed => W::Closed,
        SocketError::NotPermitted => W::NotPermitted,
        SocketError::BadHandle => W::BadHandle,
        SocketError::Other => W::Other,
    }
}

pub fn tls_to_wit(t: TlsParams) -> socket::TlsParams {
    socket::TlsParams { server_name: t.server_name, ca_file: t.ca_file, client_cert_file: t.client_cert_file, client_key_file: t.client_key_file, alpn: t.alpn }
}

fn tls_from_wit(t: socket::TlsParams) -> TlsParams {
    TlsParams { server_name: t.server_name, ca_file: t.ca_file, client_cert_file: t.client_cert_file, client_key_file: t.client_key_file, alpn: t.alpn }
}

pub fn qos_from_wit(q: api::Qos) -> QoS {
    match q {
        api::Qos::AtMostOnce => QoS::AtMostOnce,
        api::Qos::AtLeastOnce => QoS::AtLeastOnce,
        api::Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn qos_to_wit(q: QoS) -> api::Qos {
    match q {
        QoS::AtMostOnce => api::Qos::AtMostOnce,
        QoS::AtLeastOnce => api::Qos::AtLeastOnce,
        QoS::ExactlyOnce => api::Qos::ExactlyOnce,
    }
}

pub fn properties_from_wit(p: api::PublishProperties) -> Properties {
    PropertyValues {
        payload_format_indicator: p.payload_format_utf8.then_some(1),
        message_expiry_interval: p.message_expiry_secs,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        subscription_identifiers: p.subscription_ids,
        user_properties: p.user_properties,
        ..Default::default()
    }
    .into()
}

fn properties_to_wit(p: Properties) -> api::PublishProperties {
    let p = p.into_values();
    api::PublishProperties {
        payload_format_utf8: p.payload_format_indicator == Some(1),
        message_expiry_secs: p.message_expiry_interval,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        subscription_ids: p.subscription_identifiers,
        user_properties: p.user_properties,
    }
}

pub fn publish_from_wit(p: api::Publish) -> OutgoingPublish {
    OutgoingPublish {
        topic: p.topic,
        payload: p.payload,
        qos: qos_from_wit(p.qos),
        retain: p.retain,
        properties: p.properties.map(properties_from_wit).unwrap_or_default(),
    }
}

pub fn sent_id_to_wit(s: SentId) -> packet_ids::InFlight {
    packet_ids::InFlight { token: s.token, packet_id: s.packet_id, released: s.released }
}

pub fn sent_id_from_wit(s: packet_ids::InFlight) -> SentId {
    SentId { token: s.token, packet_id: s.packet_id, released: s.released }
}

pub fn subscription_from_wit(s: api::Subscription) -> SubscribeFilter {
    SubscribeFilter {
        filter: s.filter,
        qos: qos_from_wit(s.qos),
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        retain_handling: s.retain_handling,
    }
}

pub fn subscribe_properties_from_wit(p: Option<api::SubscribeProperties>) -> SubscribeProperties {
    p.map(|p| SubscribeProperties { subscription_id: p.subscription_id, user_properties: p.user_properties }).unwrap_or_default()
}

pub fn config_from_wit(mut c: api::Config) -> Result<Config, String> {
    let will = c.will.take().map(|w| Will {
        topic: w.topic,
        payload: w.payload,
        qos: qos_from_wit(w.qos),
        retain: w.retain,
        delay_secs: w.delay_secs,
        properties: w.properties.map(properties_from_wit).unwrap_or_default(),
    });
    #[cfg_attr(not(feature = "test-faults"), allow(unused_mut))]
    let mut connect_user_properties = core::mem::take(&mut c.connect_user_properties);
    #[cfg(feature = "test-faults")]
    let test_fault = {
        // The test suite picks the deliberate fault with a user property; it is not sent.
        let key = mqtt_protocol::test_fault::USER_PROPERTY;
        let name = connect_user_properties.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        connect_user_properties.retain(|(k, _)| k != key);
        match name {
            Some(n) => Some(mqtt_protocol::TestFault::from_name(&n).ok_or_else(|| mqtt_protocol::text!("unknown test fault `", n, "`"))?),
            None => None,
        }
    };
    // Every plain key is copied by name from the one list in the core; destructuring the
    // record whole makes a WIT field that is in neither that list nor here a compile error.
    macro_rules! from_wit {
        ([$c:ident] $($(#[$meta:meta])* $key:ident : $ty:ty,)*) => {{
            let api::Config { $($key,)* ssl_params, will: _ } = $c;
            Config {
                $($key,)*
                ssl_params: ssl_params.map(tls_from_wit),
                will,
                #[cfg(feature = "test-faults")]
                test_fault,
            }
        }};
    }
    c.connect_user_properties = connect_user_properties;
    Ok(mqtt_protocol::with_config_keys!(from_wit; c))
}

fn down_to_wit(d: DownReason) -> api::DownReason {
    match d {
        DownReason::LinkLost => api::DownReason::LinkLost,
        DownReason::Socket(e) => api::DownReason::Socket(socket_error_to_wit(e)),
        DownReason::Timeout => api::DownReason::Timeout,
        DownReason::MaxRepubs => api::DownReason::MaxRepubs,
        DownReason::ServerDisconnect(c) => api::DownReason::ServerDisconnect(c),
        DownReason::ProtocolError(e) => api::DownReason::ProtocolError(e),
        DownReason::Requested => api::DownReason::Requested,
    }
}

pub fn event_to_wit(e: Event) -> api::Event {
    match e {
        Event::Up { session_present } => api::Event::Up(session_present),
        Event::Down(d) => api::Event::Down(down_to_wit(d)),
        Event::Message(m) => api::Event::Message(api::Message {
            topic: m.topic,
            payload: m.payload,
            qos: qos_to_wit(m.qos),
            retained: m.retained,
            dup: m.dup,
            properties: m.properties.map(properties_to_wit),
        }),
        Event::Published(t) => api::Event::Published(t),
        Event::PublishFailed { token, reason } => api::Event::PublishFailed((token, reason)),
        Event::Subscribed { token, codes } => api::Event::Subscribed((token, codes)),
        Event::Unsubscribed { token, codes } => api::Event::Unsubscribed((token, codes)),
        Event::BrokerUp(b) => api::Event::BrokerUp(b),
        Event::Link(l) => api::Event::Link(link_to_wit(l)),
        Event::ConnectFailed(why) => api::Event::ConnectFailed(why),
        Event::Discarded(n) => api::Event::Discarded(n),
        Event::Auth { reason, data } => api::Event::Auth((reason, data)),
        Event::Error(e) => api::Event::Error(e),
    }
}

pub fn stats_to_wit(s: Stats) -> api::Stats {
    api::Stats {
        connects: s.connects,
        reconnects: s.reconnects,
        republishes: s.republishes,
        discards: s.discards,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        inflight: s.inflight,
        queued: s.queued,
        protocol_errors: s.protocol_errors,
        store_full: s.store_full,
        broker: s.broker,
    }
}
