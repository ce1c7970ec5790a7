//! MQTT 5 for the MQTT sink's binary content mode (cargo feature `mqtt5`): the CloudEvents
//! MQTT binding carries the attributes as user properties, which MQTT 3.1.1 lacks.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing, Transport};

use super::mqtt::{connection_lost, queued, Acks, REQUEST_CAP};
use super::{Delivery, SinkError};

/// How long the broker keeps the sink's session after a disconnect (MQTT 3.1.1's persistent
/// session has no end).
const SESSION_EXPIRY_SECS: u32 = 86_400;

pub(super) fn connect(
    id: String,
    host: &str,
    port: u16,
    creds: Option<(String, String)>,
    transport: Option<Transport>,
    inflight: u16,
    max_packet: usize,
) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, host, port);
    // The broker keeps its side of QoS 1 across reconnects, as 3.1.1's session does.
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
    o.set_keep_alive(Duration::from_secs(30));
    o.set_outgoing_inflight_upper_limit(inflight);
    o.set_max_packet_size(u32::try_from(max_packet).ok());
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    if let Some(t) = transport {
        o.set_transport(t);
    }
    AsyncClient::new(o, REQUEST_CAP)
}

/// Publishes the batch and waits for every PUBACK; one with a refusal reason refuses its
/// message.
pub(super) async fn publish(
    client: &AsyncClient,
    events: &mut EventLoop,
    batch: &[Delivery],
    topics: Vec<String>,
    acks: &mut Acks,
) -> Result<(), SinkError> {
    for (d, topic) in batch.iter().zip(topics) {
        client
            .try_publish_with_properties(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                d.body.clone(),
                properties(d),
            )
            .map_err(|e| queued(&e))?;
    }
    while !acks.done() {
        match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => acks.sent(pkid),
            Ok(Event::Incoming(Packet::PubAck(a))) => match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => acks.acked(a.pkid),
                refusal => acks.refused(a.pkid, &format!("{refusal:?}"))?,
            },
            Ok(_) => {}
            Err(e) => return Err(connection_lost(&e)),
        }
    }
    Ok(())
}

/// `datacontenttype` as the content type, the other attributes as user properties named as
/// the attributes.
fn properties(d: &Delivery) -> PublishProperties {
    let mut p = PublishProperties::default();
    for (attr, value) in d.attributes.iter().flatten() {
        if attr.name == "datacontenttype" {
            p.content_type = Some(value.to_string());
        } else {
            p.user_properties
                .push((attr.name.to_owned(), value.to_string()));
        }
    }
    p
}
