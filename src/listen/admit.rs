//! Admission at accept, before TLS and before any byte is parsed: the global allow-list and
//! a cap on connections per source address. A refused plain-TCP client gets one fixed JSON
//! answer (written without waiting); a TLS client is just closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Network,
    TooMany,
}

impl Refusal {
    /// The whole HTTP answer, for plain TCP.
    pub fn answer(self) -> &'static [u8] {
        match self {
            Refusal::Network => b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 89\r\n\r\n{\"error\":{\"code\":\"forbidden_source\",\"message\":\"this network may not reach the gateway\"}}\n",
            Refusal::TooMany => b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: 94\r\n\r\n{\"error\":{\"code\":\"too_many_connections\",\"message\":\"this address holds too many connections\"}}\n",
        }
    }
}

/// Connections held per source address; a [`Held`] gives its slot back when dropped.
#[derive(Clone)]
pub struct Admission {
    allow: Arc<Vec<ipnet::IpNet>>,
    per_source: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Refusals being answered at once; beyond, refused connections are just closed.
    answering: Arc<tokio::sync::Semaphore>,
}

/// How long a refused client has to send its request before the answer.
const REFUSAL_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

pub struct Held {
    ip: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Admission {
    pub fn new(allow: Vec<ipnet::IpNet>, per_source: usize) -> Self {
        Self {
            allow: Arc::new(allow),
            per_source: per_source.max(1),
            held: Arc::default(),
            answering: Arc::new(tokio::sync::Semaphore::new(32)),
        }
    }

    /// Answers a refused plain-TCP client once it sent (part of) its request, so HTTP
    /// clients read the refusal; bounded in time and in how many are answered at once.
    pub fn answer(&self, mut s: tokio::net::TcpStream, refusal: Refusal) {
        let Ok(permit) = self.answering.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(
                REFUSAL_WAIT,
                tokio::io::AsyncReadExt::read(&mut s, &mut buf),
            )
            .await;
            let _ = tokio::time::timeout(
                REFUSAL_WAIT,
                tokio::io::AsyncWriteExt::write_all(&mut s, refusal.answer()),
            )
            .await;
        });
    }

    pub fn admit(&self, ip: IpAddr) -> Result<Held, Refusal> {
        let ip = canonical(ip);
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::Network);
        }
        let mut m = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= self.per_source {
            return Err(Refusal::TooMany);
        }
        *n += 1;
        Ok(Held {
            ip,
            held: self.held.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_whole_http_messages() {
        for r in [Refusal::Network, Refusal::TooMany] {
            let a = std::str::from_utf8(r.answer()).unwrap();
            let (head, body) = a.split_once("\r\n\r\n").unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(body.len(), len, "{a}");
            let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
            assert!(v["error"]["code"].is_string());
        }
    }

    #[test]
    fn sources_are_capped_and_slots_come_back() {
        let a = Admission::new(vec!["10.0.0.0/8".parse().unwrap()], 2);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let h1 = a.admit(ip).unwrap();
        let _h2 = a.admit(ip).unwrap();
        assert_eq!(a.admit(ip).err(), Some(Refusal::TooMany));
        assert!(a.admit("10.9.9.9".parse().unwrap()).is_ok(), "per address");
        drop(h1);
        assert!(a.admit(ip).is_ok());
        assert_eq!(
            a.admit("192.168.1.1".parse().unwrap()).err(),
            Some(Refusal::Network)
        );
        let mapped: IpAddr = "::ffff:10.1.1.1".parse().unwrap();
        assert!(a.admit(mapped).is_ok(), "v4-mapped counts as v4");
    }
}
