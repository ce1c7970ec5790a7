//! The AWS KMS provider against moto's KMS emulator on a loopback port of its own.

use peat_gateway::keys::kms::{self, KmsSettings};
use peat_gateway::secret::Secret;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::service::{self, Service};
use crate::harness::{Gateway, GatewayOpts};

fn settings(svc: &Service, arn: &str) -> KmsSettings {
    KmsSettings {
        key_arn: arn.into(),
        region: "us-east-1".into(),
        endpoint: svc.url("http"),
        access_key_id: "AKIDTEST".into(),
        secret_access_key: Secret::new("test-secret".into()),
        session_token: None,
    }
}

/// A signed KMS call made by the test itself (to create the key).
async fn kms_call(svc: &Service, target: &str, body: Value) -> Value {
    let s = settings(svc, "arn:aws:kms:us-east-1:123456789012:key/x");
    let bytes = serde_json::to_vec(&body).unwrap();
    let host = format!("127.0.0.1:{}", svc.port);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut r = reqwest::Client::new().post(svc.url("http"));
    for (k, v) in kms::sign(&s, &host, target, &bytes, now) {
        r = r.header(k, v);
    }
    r.body(bytes).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn formation_keys_wrapped_by_kms_with_encryption_context_survive_restarts() {
    let svc = service::moto().await;
    let mut created = Value::Null;
    for _ in 0..100 {
        // moto answers TCP before its routes are ready.
        created = kms_call(
            &svc,
            "TrentService.CreateKey",
            json!({"Description": "peat-gateway test"}),
        )
        .await;
        if created["KeyMetadata"]["Arn"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let arn = created["KeyMetadata"]["Arn"]
        .as_str()
        .expect("CreateKey answered")
        .to_owned();

    // PEAT_KMS_KEY_ARN alone selects the provider (first in the seed's precedence).
    let opts = GatewayOpts::standard()
        .with("PEAT_KMS_KEY_ARN", &arn)
        .with("PEAT_KMS_ENDPOINT", &svc.url("http"))
        .with("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .with("AWS_SECRET_ACCESS_KEY", "test-secret")
        .with("PEAT_VAULT_ADDR", "http://127.0.0.1:9");
    let mut g = Gateway::start(opts.clone()).await;
    g.create_org("acme", "Acme").await;
    g.create_formation("acme", "mesh").await;
    let (s, creds) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert_eq!(s, 200, "{creds}");
    let (_, ready) = g.admin(Method::GET, "/ready", None).await;
    assert_eq!(
        ready["checks"]["keys"]["provider"], "aws-kms",
        "KMS wins over Vault and the KEK: {ready}"
    );
    assert_eq!(ready["checks"]["keys"]["kek_id"], format!("aws-kms:{arn}"));
    g.restart_with(opts.clone()).await;
    let (_, again) = g
        .admin(Method::GET, "/orgs/acme/formations/mesh/credentials", None)
        .await;
    assert_eq!(again["formation_secret"], creds["formation_secret"]);
    assert!(!g.all_output().contains("test-secret"));

    // The wrapped DEK is bound to its record: decrypting it for another record is refused.
    let p = peat_gateway::keys::AwsKms::connect(settings(&svc, &arn))
        .await
        .unwrap();
    use peat_gateway::keys::KeyProvider as _;
    let wrapped = p.wrap(&[5; 32], b"acme/mesh/genesis").await.unwrap();
    assert_eq!(
        *p.unwrap(&wrapped, b"acme/mesh/genesis").await.unwrap(),
        [5; 32]
    );
    assert!(p.unwrap(&wrapped, b"evil/mesh/genesis").await.is_err());

    assert!(g.stop());
    let out = g
        .command()
        .env(
            "PEAT_KMS_KEY_ARN",
            "arn:aws:kms:us-east-1:123456789012:key/missing",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PEAT_KMS_KEY_ARN"));
}
