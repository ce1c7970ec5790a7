//! Kafka (rskafka, pure Rust): one record per event, key `<org>/<app>/<collection>/<doc_id>`
//! so one document stays in one partition and in order. CloudEvents Kafka binding: structured
//! mode sends the CloudEvent as the value (header `content-type:
//! application/cloudevents+json`) and a `ce_id` header; binary mode sends the document as the
//! value, every attribute as a `ce_` header and `content-type` for `datacontenttype`. Produced
//! with `acks=all`; a batch is
//! delivered when every partition acknowledged its records. At least once: after any error the
//! client is dropped and the batch produced again, so receivers dedupe by `ce_id`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use rskafka::BackoffConfig;

use super::{DeliverFuture, Delivery, Sink, SinkError};

/// Longest wait for one produce request's acknowledgement (rskafka retries inside it).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Partitions of a topic the sink creates when the broker has none of that name.
const NEW_TOPIC_PARTITIONS: i32 = 3;

/// How the sink authenticates (SASL); the password is sealed with the sink's secrets.
#[derive(Debug, Clone)]
pub struct Sasl {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

pub struct KafkaSink {
    brokers: Vec<String>,
    topic: String,
    compression: Compression,
    batch_size: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<Sasl>,
    egress: crate::egress::Egress,
    /// The client and one partition client per partition, in partition order.
    conn: Option<(Client, Vec<PartitionClient>)>,
}

/// The compression names a sink may ask for.
pub fn compression(name: Option<&str>) -> Result<Compression, String> {
    match name.unwrap_or("none") {
        "none" => Ok(Compression::NoCompression),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        other => Err(format!(
            "compression '{other}' is not one of none, gzip, snappy"
        )),
    }
}

/// `host:port,host:port`, each checked.
pub fn parse_brokers(list: &str) -> Result<Vec<(String, u16)>, String> {
    let out: Vec<(String, u16)> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|b| {
            let (h, p) = b
                .rsplit_once(':')
                .ok_or_else(|| format!("'{b}' is not host:port"))?;
            let port = p.parse().map_err(|_| format!("'{b}' has no valid port"))?;
            let host = h.trim_matches(['[', ']']);
            if host.is_empty() || host.chars().any(char::is_whitespace) {
                return Err(format!("'{b}' has no host"));
            }
            Ok((host.to_owned(), port))
        })
        .collect::<Result<_, String>>()?;
    if out.is_empty() || out.len() > 16 {
        return Err("name 1 to 16 brokers as host:port,host:port".into());
    }
    Ok(out)
}

/// A stable partition for a key (FNV-1a), so one document always lands in one partition.
fn partition_of(key: &[u8], partitions: usize) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h as usize) % partitions.max(1)
}

fn key_of(d: &Delivery) -> Vec<u8> {
    let e = &d.event;
    format!("{}/{}/{}/{}", e.org_id, e.app_id, e.collection, e.doc_id).into_bytes()
}

/// The record's headers in the sink's content mode.
fn headers(d: &Delivery) -> BTreeMap<String, Vec<u8>> {
    let mut h = BTreeMap::new();
    h.insert("ce_id".to_owned(), d.id.as_bytes().to_vec());
    match &d.attributes {
        None => {
            h.insert(
                "content-type".to_owned(),
                b"application/cloudevents+json".to_vec(),
            );
        }
        Some(attrs) => {
            for (attr, value) in attrs {
                h.insert(attr.kafka.to_owned(), value.as_bytes().to_vec());
            }
        }
    }
    h
}

/// A broker error that no retry of the same record will cure.
fn permanent(e: &rskafka::client::error::Error) -> bool {
    use rskafka::client::error::{Error, ProtocolError as P};
    matches!(
        e,
        Error::ServerError {
            protocol_error: P::MessageTooLarge
                | P::RecordListTooLarge
                | P::InvalidTopicException
                | P::TopicAuthorizationFailed
                | P::InvalidRecord,
            ..
        }
    )
}

/// A topic the broker will not create, whatever the retry.
fn uncreatable(e: &rskafka::client::error::Error) -> bool {
    use rskafka::client::error::{Error, ProtocolError as P};
    matches!(
        e,
        Error::ServerError {
            protocol_error: P::PolicyViolation | P::ClusterAuthorizationFailed,
            ..
        }
    )
}

impl KafkaSink {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        brokers: &str,
        topic: String,
        compression_name: Option<&str>,
        batch_size: Option<usize>,
        egress: crate::egress::Egress,
        tls: bool,
        tls_ca_pem: Option<&str>,
        client: Option<(&str, &str)>,
        sasl: Option<Sasl>,
    ) -> Result<Self, String> {
        let parsed = parse_brokers(brokers).map_err(|e| format!("Kafka brokers: {e}"))?;
        if client.is_some() && !tls {
            return Err("a client certificate needs tls".into());
        }
        let tls = if tls {
            Some(Arc::new(crate::tls::client_config(tls_ca_pem, client)?))
        } else {
            None
        };
        Ok(Self {
            brokers: parsed.iter().map(|(h, p)| format!("{h}:{p}")).collect(),
            topic,
            compression: compression(compression_name)?,
            batch_size: batch_size.unwrap_or(256).clamp(1, 10_000),
            tls,
            sasl,
            egress,
            conn: None,
        })
    }

    async fn connect(&self) -> Result<(Client, Vec<PartitionClient>), SinkError> {
        let t = |e: String| SinkError::Transient(e);
        // Every broker address is checked against the org's egress policy first.
        let mut bootstrap = Vec::new();
        for b in &self.brokers {
            let (h, p) = b.rsplit_once(':').unwrap_or((b, "9092"));
            let port = p.parse().unwrap_or(9092);
            let host = self
                .egress
                .pinned_host(h, port, self.tls.is_some())
                .await
                .map_err(t)?;
            bootstrap.push(format!("{host}:{port}"));
        }
        let mut builder = ClientBuilder::new(bootstrap)
            .client_id("peat-gateway")
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(ACK_TIMEOUT),
            });
        if let Some(cfg) = &self.tls {
            builder = builder.tls_config(cfg.clone());
        }
        if let Some(s) = &self.sasl {
            let creds = Credentials::new(s.username.clone(), s.password.clone());
            builder = builder.sasl_config(match s.mechanism.as_str() {
                "SCRAM-SHA-256" => SaslConfig::ScramSha256(creds),
                "SCRAM-SHA-512" => SaslConfig::ScramSha512(creds),
                _ => SaslConfig::Plain(creds),
            });
        }
        let client = tokio::time::timeout(CONNECT_TIMEOUT, builder.build())
            .await
            .map_err(|_| t("connecting to the Kafka brokers: timed out".into()))?
            .map_err(|e| {
                t(format!(
                    "connecting to the Kafka brokers: {}",
                    crate::peer_read::chain(&e)
                ))
            })?;
        let topics = tokio::time::timeout(ACK_TIMEOUT, client.list_topics())
            .await
            .map_err(|_| t("listing topics: timed out".into()))?
            .map_err(|e| t(format!("listing topics: {}", crate::peer_read::chain(&e))))?;
        let mut partitions: Vec<i32> = topics
            .iter()
            .find(|x| x.name == self.topic)
            .map(|x| x.partitions.iter().copied().collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            let controller = client
                .controller_client()
                .map_err(|e| t(format!("Kafka controller: {e}")))?;
            tokio::time::timeout(
                ACK_TIMEOUT,
                controller.create_topic(&self.topic, NEW_TOPIC_PARTITIONS, 1, 5_000),
            )
            .await
            .map_err(|_| t(format!("creating topic {}: timed out", self.topic)))?
            .map_err(|e| {
                let reason = format!(
                    "topic {} does not exist and cannot be created: {}",
                    self.topic,
                    crate::peer_read::chain(&e)
                );
                // Refused for good (not allowed, invalid): the operator must act; else retry.
                if permanent(&e) || uncreatable(&e) {
                    SinkError::Rejected { index: 0, reason }
                } else {
                    t(reason)
                }
            })?;
            partitions = (0..NEW_TOPIC_PARTITIONS).collect();
        }
        partitions.sort_unstable();
        let mut clients = Vec::with_capacity(partitions.len());
        for p in partitions {
            let pc = client
                .partition_client(self.topic.clone(), p, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| t(format!("partition {p}: {}", crate::peer_read::chain(&e))))?;
            clients.push(pc);
        }
        Ok((client, clients))
    }

    async fn produce(&mut self, batch: &[Delivery]) -> Result<(), SinkError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let Some((_, partitions)) = &self.conn else {
            return Err(SinkError::Transient("no Kafka connection".into()));
        };
        // Each partition's records keep the batch's order; (index in batch, record).
        let mut by_partition: BTreeMap<usize, Vec<(usize, Record)>> = BTreeMap::new();
        let now = rskafka::chrono::DateTime::from_timestamp_millis(
            i64::try_from(crate::tenant::now_ms()).unwrap_or(i64::MAX),
        )
        .unwrap_or_default();
        for (i, d) in batch.iter().enumerate() {
            let key = key_of(d);
            let p = partition_of(&key, partitions.len());
            let headers = headers(d);
            by_partition.entry(p).or_default().push((
                i,
                Record {
                    key: Some(key),
                    value: Some(d.body.to_vec()),
                    headers,
                    timestamp: now,
                },
            ));
        }
        for (p, records) in by_partition {
            let client = &partitions[p];
            for chunk in records.chunks(self.batch_size) {
                let first = chunk.first().map_or(0, |(i, _)| *i);
                let recs: Vec<Record> = chunk.iter().map(|(_, r)| r.clone()).collect();
                match tokio::time::timeout(ACK_TIMEOUT, client.produce(recs, self.compression))
                    .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if permanent(&e) => {
                        return Err(SinkError::Rejected {
                            index: first,
                            reason: format!(
                                "Kafka refused the record: {}",
                                crate::peer_read::chain(&e)
                            ),
                        })
                    }
                    Ok(Err(e)) => {
                        return Err(SinkError::Transient(format!(
                            "producing to {} partition {p}: {}",
                            self.topic,
                            crate::peer_read::chain(&e)
                        )))
                    }
                    Err(_) => {
                        return Err(SinkError::Transient(format!(
                            "{} partition {p} did not acknowledge within {ACK_TIMEOUT:?}",
                            self.topic
                        )))
                    }
                }
            }
        }
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> DeliverFuture<'a> {
        Box::pin(async move {
            let r = self.produce(batch).await;
            if matches!(r, Err(SinkError::Transient(_))) {
                // A new client next time: the link may have changed under this one.
                self.conn = None;
            }
            r
        })
    }

    fn target(&self) -> String {
        format!("kafka://{} topic {}", self.brokers.join(","), self.topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_compression_and_partitions() {
        assert_eq!(
            parse_brokers("a:9092, b:9093").unwrap(),
            [("a".to_owned(), 9092), ("b".to_owned(), 9093)]
        );
        for bad in ["", "a", "a:x", ":1"] {
            assert!(parse_brokers(bad).is_err(), "{bad}");
        }
        assert!(compression(Some("zstd")).is_err());
        assert!(compression(None).is_ok());
        let k = b"acme/mesh/tracks/t-1";
        assert_eq!(partition_of(k, 3), partition_of(k, 3));
        assert!(partition_of(k, 3) < 3);
    }
}
