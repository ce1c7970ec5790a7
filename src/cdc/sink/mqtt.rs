//! MQTT 3.1.1 at QoS 1: a batch counts as delivered only when the broker sent a PUBACK for
//! every message of it. Topic `<prefix>/<org>/<app>/<collection token>/<doc token>` with the
//! same reversible token encoding as the NATS sink.
//!
//! rumqttc drops in-flight messages silently when a broker comes back without the session, so
//! the gateway never relies on its retransmission: after any error the connection is dropped
//! and the whole batch is published again from the outbox (same event ids in the payload).

use std::collections::HashSet;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};

use super::nats::token;
use super::{DeliverFuture, Delivery, Sink, SinkError};
use crate::tenant::parse_mqtt_url as parse_url;

/// Longest wait for a batch's acknowledgements.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Queue between client and event loop; more than a dispatcher batch, so `try_publish` never fails for room.
const REQUEST_CAP: usize = 512;

pub struct MqttSink {
    addr: crate::tenant::MqttAddr,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    client_id: String,
    prefix: String,
    org: String,
    egress: crate::egress::Egress,
    conn: Option<(AsyncClient, EventLoop)>,
}

impl MqttSink {
    pub fn new(
        url: &str,
        prefix: String,
        org: String,
        sink_id: &str,
        egress: crate::egress::Egress,
        tls_ca_pem: Option<&str>,
        client: Option<(&str, &str)>,
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
    async fn connection(&mut self) -> Result<&mut (AsyncClient, EventLoop), SinkError> {
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

    fn connect_to(&self, host: String) -> (AsyncClient, EventLoop) {
        let a = &self.addr;
        let tls = self.tls.clone();
        let (port, id) = (a.port, self.client_id.clone());
        let creds = a.user.clone().map(|u| {
            (
                u,
                a.password
                    .as_ref()
                    .map(|p| p.expose().to_owned())
                    .unwrap_or_default(),
            )
        });
        {
            let mut o = MqttOptions::new(id, host.trim_matches(['[', ']']), port);
            // A persistent session keeps the broker's side of QoS 1 across reconnects.
            o.set_clean_session(false);
            o.set_keep_alive(Duration::from_secs(30));
            o.set_inflight(u16::try_from(REQUEST_CAP).unwrap_or(u16::MAX));
            o.set_max_packet_size(1024 * 1024 + 4096, 1024 * 1024 + 4096);
            if let Some((u, p)) = creds {
                o.set_credentials(u, p);
            }
            if let Some(cfg) = tls {
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(cfg),
                ));
            }
            AsyncClient::new(o, REQUEST_CAP)
        }
    }

    async fn publish(&mut self, batch: &[Delivery]) -> Result<(), SinkError> {
        let topics: Vec<String> = batch.iter().map(|d| self.topic(d)).collect();
        let (client, events) = self.connection().await?;
        for (d, topic) in batch.iter().zip(topics) {
            client
                .try_publish(topic, QoS::AtLeastOnce, false, d.body.clone())
                .map_err(|e| SinkError::Transient(format!("queueing a publish: {e}")))?;
        }
        let mut sent: HashSet<u16> = HashSet::new();
        let mut sent_count = 0usize;
        let mut acked = 0usize;
        let wait = async {
            while acked < batch.len() {
                match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        sent.insert(pkid);
                        sent_count += 1;
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        if sent.remove(&a.pkid) {
                            acked += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(SinkError::Transient(format!("MQTT connection: {e}"))),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(ACK_TIMEOUT, wait).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SinkError::Transient(format!(
                "{acked} of {} acknowledged within {ACK_TIMEOUT:?} ({sent_count} sent)",
                batch.len()
            ))),
        }
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
