//! MQTT at QoS 1: a batch counts as delivered only when the broker sent a PUBACK for every
//! message of it. Topic `<prefix>/<org>/<app>/<collection token>/<doc token>` with the same
//! reversible token encoding as the NATS sink. Structured CloudEvents go over MQTT 3.1.1;
//! binary mode needs MQTT 5 (the CloudEvents MQTT binding): the document is the payload, the
//! attributes are user properties and `datacontenttype` the content type property, and a
//! PUBACK with a refusal reason refuses that message.
//!
//! rumqttc drops in-flight messages silently when a broker comes back without the session, so
//! the gateway never relies on its retransmission: after any error the connection is dropped
//! and the whole batch is published again from the outbox (same event ids in the payload).

use std::collections::HashSet;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};

use super::token::token;
use super::{DeliverFuture, Delivery, Sink, SinkError};
use crate::tenant::parse_mqtt_url as parse_url;

/// Longest wait for a batch's acknowledgements.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Queue between client and event loop; more than a dispatcher batch, so `try_publish` never fails for room.
pub(super) const REQUEST_CAP: usize = 512;

enum Conn {
    V3(AsyncClient, Box<EventLoop>),
    #[cfg(feature = "mqtt5")]
    V5(rumqttc::v5::AsyncClient, Box<rumqttc::v5::EventLoop>),
}

pub struct MqttSink {
    addr: crate::tenant::MqttAddr,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    client_id: String,
    prefix: String,
    org: String,
    egress: crate::egress::Egress,
    /// Binary content mode, over MQTT 5 (a build without it refuses the sink before here).
    #[cfg_attr(not(feature = "mqtt5"), allow(dead_code))]
    binary: bool,
    conn: Option<Conn>,
}

impl MqttSink {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        url: &str,
        prefix: String,
        org: String,
        sink_id: &str,
        egress: crate::egress::Egress,
        tls_ca_pem: Option<&str>,
        client: Option<(&str, &str)>,
        binary: bool,
    ) -> Result<Self, String> {
        let addr = parse_url(url).map_err(|e| format!("MQTT url {e}"))?;
        if client.is_some() && !addr.tls {
            return Err("a client certificate needs an mqtts:// URL".into());
        }
        let tls = if addr.tls {
            Some(std::sync::Arc::new(crate::tls::client_config(
                tls_ca_pem, client,
            )?))
        } else {
            None
        };
        Ok(Self {
            addr,
            tls,
            client_id: format!("peat-gw-{sink_id}"),
            prefix,
            org,
            egress,
            binary,
            conn: None,
        })
    }

    fn topic(&self, d: &Delivery) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.prefix,
            self.org,
            d.event.app_id,
            token(&d.event.collection),
            token(&d.event.doc_id)
        )
    }

    /// The open connection, or a new one to an address the org's egress policy allows.
    async fn connection(&mut self) -> Result<&mut Conn, SinkError> {
        if self.conn.is_none() {
            let a = &self.addr;
            let host = self
                .egress
                .pinned_host(&a.host, a.port, a.tls)
                .await
                .map_err(SinkError::Transient)?;
            self.conn = Some(self.connect_to(host));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| SinkError::Transient("no MQTT connection".into()))
    }

    fn connect_to(&self, host: String) -> Conn {
        let a = &self.addr;
        let (host, port, id) = (
            host.trim_matches(['[', ']']),
            a.port,
            self.client_id.clone(),
        );
        let creds = a.user.clone().map(|u| {
            (
                u,
                a.password
                    .as_ref()
                    .map(|p| p.expose().to_owned())
                    .unwrap_or_default(),
            )
        });
        let transport = self
            .tls
            .clone()
            .map(|cfg| rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(cfg)));
        let inflight = u16::try_from(REQUEST_CAP).unwrap_or(u16::MAX);
        let max_packet = 1024 * 1024 + 4096;
        #[cfg(feature = "mqtt5")]
        if self.binary {
            let (c, e) =
                super::mqtt5::connect(id, host, port, creds, transport, inflight, max_packet);
            return Conn::V5(c, Box::new(e));
        }
        let mut o = MqttOptions::new(id, host, port);
        // A persistent session keeps the broker's side of QoS 1 across reconnects.
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_inflight(inflight);
        o.set_max_packet_size(max_packet, max_packet);
        if let Some((u, p)) = creds {
            o.set_credentials(u, p);
        }
        if let Some(t) = transport {
            o.set_transport(t);
        }
        let (c, e) = AsyncClient::new(o, REQUEST_CAP);
        Conn::V3(c, Box::new(e))
    }

    async fn publish(&mut self, batch: &[Delivery]) -> Result<(), SinkError> {
        let topics: Vec<String> = batch.iter().map(|d| self.topic(d)).collect();
        let mut acks = Acks::new(batch.len());
        let wait = async {
            match self.connection().await? {
                Conn::V3(client, events) => {
                    for (d, topic) in batch.iter().zip(topics) {
                        client
                            .try_publish(topic, QoS::AtLeastOnce, false, d.body.clone())
                            .map_err(|e| queued(&e))?;
                    }
                    while !acks.done() {
                        match events.poll().await {
                            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => acks.sent(pkid),
                            Ok(Event::Incoming(Packet::PubAck(a))) => acks.acked(a.pkid),
                            Ok(_) => {}
                            Err(e) => return Err(connection_lost(&e)),
                        }
                    }
                }
                #[cfg(feature = "mqtt5")]
                Conn::V5(client, events) => {
                    super::mqtt5::publish(client, events, batch, topics, &mut acks).await?
                }
            }
            Ok(())
        };
        let r = tokio::time::timeout(ACK_TIMEOUT, wait).await;
        match r {
            Ok(r) => r,
            Err(_) => Err(SinkError::Transient(format!(
                "{} of {} acknowledged within {ACK_TIMEOUT:?} ({} sent)",
                acks.acked,
                batch.len(),
                acks.order.len()
            ))),
        }
    }
}

pub(super) fn connection_lost(e: &dyn std::fmt::Display) -> SinkError {
    SinkError::Transient(format!("MQTT connection: {e}"))
}

pub(super) fn queued(e: &dyn std::fmt::Display) -> SinkError {
    SinkError::Transient(format!("queueing a publish: {e}"))
}

/// The batch's acknowledgements: packet ids in the order the messages left, so a refusal
/// names its message.
pub(super) struct Acks {
    want: usize,
    order: Vec<u16>,
    pending: HashSet<u16>,
    acked: usize,
}

impl Acks {
    fn new(want: usize) -> Self {
        Self {
            want,
            order: Vec::with_capacity(want),
            pending: HashSet::with_capacity(want),
            acked: 0,
        }
    }

    pub(super) fn done(&self) -> bool {
        self.acked >= self.want
    }

    pub(super) fn sent(&mut self, pkid: u16) {
        self.order.push(pkid);
        self.pending.insert(pkid);
    }

    pub(super) fn acked(&mut self, pkid: u16) {
        if self.pending.remove(&pkid) {
            self.acked += 1;
        }
    }

    /// The broker refused one message for good: the batch stops there, once every message
    /// before it is acknowledged (a broker acknowledges in order; anything else is retried).
    #[cfg_attr(not(feature = "mqtt5"), allow(dead_code))]
    pub(super) fn refused(&self, pkid: u16, reason: &str) -> Result<(), SinkError> {
        let Some(index) = self.order.iter().position(|p| *p == pkid) else {
            return Ok(());
        };
        if self.order[..index].iter().any(|p| self.pending.contains(p)) {
            return Err(SinkError::Transient(format!(
                "the MQTT broker refused a message ({reason}) before acknowledging earlier ones"
            )));
        }
        Err(SinkError::Rejected {
            index,
            reason: format!("the MQTT broker refused the message: {reason}"),
        })
    }
}

impl Sink for MqttSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> DeliverFuture<'a> {
        Box::pin(async move {
            let r = self.publish(batch).await;
            if r.is_err() {
                // Start clean: queued and in-flight requests would otherwise be sent twice.
                self.conn = None;
            }
            r
        })
    }

    fn target(&self) -> String {
        format!(
            "{}://{}:{} topics {}/{}/#",
            if self.addr.tls { "mqtts" } else { "mqtt" },
            self.addr.host,
            self.addr.port,
            self.prefix,
            self.org
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_its_message_only_once_every_earlier_one_is_acknowledged() {
        let mut acks = Acks::new(3);
        for pkid in [7, 8, 9] {
            acks.sent(pkid);
        }
        assert!(matches!(
            acks.refused(8, "QuotaExceeded"),
            Err(SinkError::Transient(_))
        ));
        acks.acked(7);
        match acks.refused(8, "QuotaExceeded") {
            Err(SinkError::Rejected { index, reason }) => {
                assert_eq!(index, 1);
                assert!(reason.contains("QuotaExceeded"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            acks.refused(42, "NotAuthorized").is_ok(),
            "not of this batch"
        );
        acks.acked(8);
        acks.acked(8);
        acks.acked(9);
        assert!(acks.done());
    }
}
