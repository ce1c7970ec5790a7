//! `serve` and `demo`: start-up in order, serve until a signal, shut down in order. What the
//! demo seeds is `demo.rs`'s.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use peat_gateway::api::{self, AppState, KeyStatus};
use peat_gateway::cdc::sink::SinkContext;
use peat_gateway::cdc::source::simulator::Simulator;
use peat_gateway::cdc::source::Sources;
use peat_gateway::cdc::{Dispatcher, FullPolicy, Outbox};
use peat_gateway::config::{self, Config, KeyConfig};
use peat_gateway::keys::Keyring;
use peat_gateway::listen;
use peat_gateway::metrics::Metrics;
use peat_gateway::store::{CommitStats, Store, StoreOptions};
use peat_gateway::tenant::{
    Actor, AdminBootstrap, Need, NewSource, Principal, Tenancy, TenantError,
};
use tokio::net::TcpListener;

use super::admin::load_config;
use super::demo::{
    bind_demo_source, demo_broker_sinks, demo_kek, print_demo_guide, seed_demo, Seed,
};
use super::{config_file, init_logging, runtime, Failure};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Directory for the demo's state and generated KEK.
    #[arg(long, default_value = "./demo-data")]
    data_dir: PathBuf,
    /// Listen address of the demo.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Document updates per second from the simulated formation (a test double of a
    /// peat-node sidecar on a loopback port); 0 keeps it quiet.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Also deliver to NATS JetStream at this URL (subjects `peat.demo.>`).
    #[arg(long)]
    nats_url: Option<String>,
    /// Also deliver to MQTT at this URL, e.g. mqtt://127.0.0.1:1883 (topics `peat/demo/#`).
    #[arg(long)]
    mqtt_url: Option<String>,
    /// Also deliver to Redis Streams at this URL, e.g. redis://127.0.0.1:6379 (stream
    /// `peat-demo-demo-mesh`).
    #[arg(long)]
    redis_url: Option<String>,
    /// Also deliver to Kafka at these brokers, e.g. 127.0.0.1:9092 (topic `peat-demo`; a build
    /// with the `kafka` feature).
    #[arg(long)]
    kafka_brokers: Option<String>,
}

pub(crate) fn serve(flag: Option<&Path>) -> Result<ExitCode, Failure> {
    let cfg = load_config(flag)?;
    init_logging(&cfg.log_filter);
    let rt = runtime()?;
    rt.block_on(async move {
        let running = start(cfg, None).await?;
        running.serve().await.map_err(Failure::Runtime)
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn demo(flag: Option<&Path>, args: DemoArgs) -> Result<ExitCode, Failure> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let kek = demo_kek(&args.data_dir)?;
    let data_dir = args.data_dir.display().to_string();
    let file = config_file(flag);
    let loaded = config::load(file.as_deref(), |k| match k {
        "PEAT_GATEWAY_DATA_DIR" => Some(data_dir.clone()),
        "PEAT_GATEWAY_BIND" => Some(args.bind.clone()),
        "PEAT_KEK" => Some(kek.clone()),
        "PEAT_KEY_PROVIDER" | "PEAT_ADMIN_TOKEN" | "PEAT_DEV_MODE" => None,
        // The demo's brokers (--nats-url, --mqtt-url) run on this machine.
        "PEAT_EGRESS_ALLOW" => {
            Some(std::env::var(k).unwrap_or_else(|_| "127.0.0.0/8,::1,localhost".into()))
        }
        other => std::env::var(other).ok(),
    })
    .map_err(Failure::Config)?;
    let cfg = Config::from_raw(loaded).map_err(Failure::Config)?;
    init_logging(&cfg.log_filter);
    let rt = runtime()?;
    let (rate, nats_url, mqtt_url, redis_url, kafka_brokers) = (
        args.rate,
        args.nats_url,
        args.mqtt_url,
        args.redis_url,
        args.kafka_brokers,
    );
    rt.block_on(async move {
        let sim = Simulator::start(([127, 0, 0, 1], 0).into())
            .await
            .context("starting the simulated formation")?;
        if rate > 0.0 {
            sim.generate(rate);
        }
        let seed = Seed {
            node_url: sim.url(),
            nats_url,
            mqtt_url,
            redis_url,
            kafka_brokers,
        };
        let running = start(cfg, Some(seed)).await?;
        // The simulator lives as long as the demo serves.
        let served = running.serve().await.map_err(Failure::Runtime);
        drop(sim);
        served
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A probe slower than this counts as a failure (a hung KMS must not look healthy).
const KEY_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct Running {
    listeners: Vec<listen::Bound>,
    limits: listen::Limits,
    /// TLS settings in use, and where they come from, for reloads.
    tls: Option<(listen::TlsState, super::reload::TlsFiles)>,
    state: AppState,
    store: Store,
    key_probe: Option<std::time::Duration>,
    audit_retention: peat_gateway::tenant::AuditRetention,
}

async fn start(cfg: Config, seed: Option<Seed>) -> anyhow::Result<Running> {
    let started = std::time::Instant::now();
    let changed = config::private::tighten(&cfg.data_dir)
        .with_context(|| format!("making {} private", cfg.data_dir.display()))?;
    for (path, old, new) in changed {
        tracing::info!(path = %path.display(), old = format!("{old:o}"), new = format!("{new:o}"),
            "tightened a data file's permissions: group and others lose access");
    }
    if cfg.dev_mode {
        tracing::warn!("DEV MODE is on: do not run a kit like this");
    }
    if matches!(cfg.key, KeyConfig::Plaintext) {
        tracing::warn!(
            "key provider is PLAINTEXT: formation keys are stored unencrypted; development only"
        );
    }
    let (keyring, kek_created) = super::keyring::keyring(&cfg.key, &cfg.data_dir).await?;
    tracing::info!(provider = %keyring.provider_kind(), kek_id = keyring.kek_id(), "key provider selected");
    let metrics = Arc::new(Metrics::new());
    let m = metrics.clone();
    let on_commit: Arc<dyn Fn(CommitStats) + Send + Sync> = Arc::new(move |s: CommitStats| {
        m.store_commit_seconds.observe(s.elapsed.as_secs_f64());
        m.store_commit_ops.observe(s.ops as f64);
    });
    let path = cfg.data_dir.join("state.redb");
    let opts = StoreOptions {
        cache_bytes: cfg.store_cache_bytes,
        ..StoreOptions::default()
    };
    let store = {
        let p = path.clone();
        tokio::task::spawn_blocking(move || Store::open(&p, &opts, Some(on_commit)))
            .await
            .context("state database open task")?
            .with_context(|| format!("opening {}", path.display()))?
    };
    if kek_created {
        let target = format!("gateway/kek/{}", keyring.kek_id());
        if let Err(e) =
            Tenancy::audit_key_operation(&store, &Actor::system(), "keys.init", target).await
        {
            store.shutdown().await;
            return Err(e).context("recording the new KEK in the audit log");
        }
    }
    let outbox = {
        let (dir, cache, ocfg) = (cfg.data_dir.clone(), cfg.store_cache_bytes, cfg.outbox);
        let m = metrics.clone();
        let on_commit: Arc<dyn Fn(CommitStats) + Send + Sync> = Arc::new(move |s: CommitStats| {
            m.outbox_commit_seconds.observe(s.elapsed.as_secs_f64());
            m.outbox_commit_ops.observe(s.ops as f64);
        });
        tokio::task::spawn_blocking(move || Outbox::open(&dir, cache, ocfg, Some(on_commit)))
            .await
            .context("outbox open task")?
    };
    let outbox = match outbox {
        Ok(o) => o,
        Err(e) => {
            store.shutdown().await;
            return Err(e)
                .with_context(|| format!("opening {}", cfg.data_dir.join("cdc.redb").display()));
        }
    };
    let demo = seed.is_some();
    match prepare(&cfg, seed, store.clone(), outbox.clone(), keyring, metrics).await {
        Ok(state) => bind(&cfg, state, store, demo, started).await,
        Err(e) => {
            // Close the files cleanly so a refused start leaves no repair work behind.
            outbox.shutdown().await;
            store.shutdown().await;
            Err(e)
        }
    }
}

async fn prepare(
    cfg: &Config,
    seed: Option<Seed>,
    store: Store,
    outbox: Outbox,
    keyring: Keyring,
    metrics: Arc<Metrics>,
) -> anyhow::Result<AppState> {
    if seed.is_some() {
        let token = Tenancy::rotate_admin_token(&store)
            .await
            .context("creating the demo admin token")?;
        print_banner("demo admin token (new on every demo start)", &token);
    }
    let (admin, boot) = Tenancy::bootstrap_admin(
        &store,
        cfg.admin_token.as_ref().map(|s| s.expose()),
        cfg.dev_mode,
    )
    .await
    .context("setting up the admin token")?;
    match &boot {
        AdminBootstrap::Generated(token) => {
            print_banner("generated bootstrap admin token (shown once)", token)
        }
        AdminBootstrap::Configured => tracing::info!("admin token from configuration"),
        AdminBootstrap::Stored => tracing::info!(
            "admin token: the stored hash (rotate with `peat-gateway admin-token rotate`)"
        ),
        AdminBootstrap::DevOpen => tracing::warn!(
            "no admin token and dev mode on: the admin API is OPEN to anyone who can reach it"
        ),
    }
    let tenancy = Tenancy::new(store.clone(), keyring.clone(), cfg.default_quotas, admin);
    let records_checked = tenancy.verify_keys(16).await.map_err(|e| {
        anyhow::anyhow!(
            "the configured key cannot open the stored formation keys ({}). \
             Start with the KEK these records were sealed under (check PEAT_KEK); nothing was changed",
            match &e {
                TenantError::Key(k) => k.to_string(),
                other => other.to_string(),
            }
        )
    })?;
    if seed.is_some() {
        seed_demo(&tenancy)
            .await
            .context("creating the demo org and formation")?;
    }
    metrics
        .key_provider
        .get_or_create(&peat_gateway::metrics::KeyLabels {
            provider: keyring.provider_kind().name().to_owned(),
            kek_id: keyring.kek_id().to_owned(),
        })
        .set(1);
    metrics
        .key_records_checked
        .set(i64::try_from(records_checked).unwrap_or(i64::MAX));
    let keys = KeyStatus {
        provider: keyring.provider_kind().name(),
        kek_id: keyring.kek_id().to_owned(),
        problem: None,
        records_checked,
        health: Default::default(),
    };
    metrics.key_provider_up.set(1);
    tenancy.egress_policies().set_base(cfg.egress_allow.clone());
    tenancy
        .load_egress()
        .await
        .context("reading the orgs' egress grants")?;
    let ctx = SinkContext {
        data_dir: cfg.data_dir.clone(),
        default_nats_url: cfg.cdc_nats_url.clone(),
        default_kafka_brokers: cfg.cdc_kafka_brokers.clone(),
        egress: tenancy.egress_policies(),
    };
    let orgs = tenancy
        .org_uids()
        .await
        .context("listing orgs for the outbox")?;
    let stamped = outbox
        .stamp_older_events(orgs)
        .await
        .context("moving the outbox's older events into each org's log")?;
    if stamped.moved + stamped.orphaned > 0 {
        tracing::info!(
            moved = stamped.moved,
            removed_of_deleted_orgs = stamped.orphaned,
            "outbox events moved into each org's log"
        );
    }
    // Node changes count in the CDC counters as HTTP ingest does.
    let m = metrics.clone();
    let sources = Sources::new(outbox.clone(), tenancy.clone())
        .with_append_hook(Arc::new(move |r| m.ingested(r)));
    let cdc = Dispatcher::new(outbox, tenancy.clone(), ctx);
    // Seeding first, so the sinks and sources it adds start with the rest.
    if let Some(seed) = &seed {
        bind_demo_source(&tenancy, &seed.node_url)
            .await
            .context("binding the demo formation to the simulated node")?;
        demo_broker_sinks(&tenancy, seed)
            .await
            .context("adding the demo's broker sinks (check --nats-url / --mqtt-url)")?;
    }
    apply_config_sources(&tenancy, &cfg.sources).await?;
    cdc.sync().await.context("starting the CDC sinks")?;
    sources.sync().await.context("starting the CDC sources")?;
    tracing::info!(
        gateway_id = cdc.outbox().gateway_id(),
        head_lsn = cdc.outbox().head(),
        outbox_bytes = cdc.outbox().stats().bytes,
        policy = cdc.outbox().policy().name(),
        "outbox open"
    );
    Ok(AppState::new(
        tenancy,
        cdc,
        sources,
        metrics,
        keys,
        cfg.request_timeout,
        cfg.max_body_bytes,
    )
    .with_ui_dir(cfg.ui_dir.clone())
    .with_enroll_rate(cfg.enroll_rate_per_min)
    .with_auth_failure_rate(cfg.auth_failures_per_min)
    .with_allow_list(cfg.allow.clone())
    .with_client_roles(cfg.client_roles.clone())
    .with_stream_budget(cfg.streams_per_caller, (cfg.max_connections / 4).max(8))
    .with_public_detail(cfg.public_detail)
    .with_ready_requires_nodes(cfg.ready_requires_nodes))
}

async fn bind(
    cfg: &Config,
    state: AppState,
    store: Store,
    demo: bool,
    started: std::time::Instant,
) -> anyhow::Result<Running> {
    let listener = match TcpListener::bind(cfg.bind).await {
        Ok(l) => l,
        Err(e) => {
            state.cdc.shutdown().await;
            state.cdc.outbox().shutdown().await;
            store.shutdown().await;
            return Err(e).with_context(|| {
                format!(
                    "cannot listen on {} (PEAT_GATEWAY_BIND); is another process using that port?",
                    cfg.bind
                )
            });
        }
    };
    let addr = listener.local_addr().context("reading the bound address")?;
    let tls = match &cfg.tls {
        // Checked when the configuration was read; failing here still stops start-up.
        Some(t) => Some(listen::TlsState::new(
            t.server_config().map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
        )),
        None => None,
    };
    if let Some(t) = &cfg.tls {
        state
            .activity
            .tls_loaded(listen::cert_not_after(&t.cert_pem).ok());
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut listeners = vec![listen::Bound::Tcp {
        listener,
        tls: tls.clone(),
    }];
    if let Some(u) = &cfg.unix_socket {
        let l = listen::bind_unix(&u.path, u.mode, u.owner).map_err(|e| {
            anyhow::anyhow!("cannot listen on the Unix socket (PEAT_GATEWAY_UNIX_SOCKET): {e}")
        })?;
        tracing::info!(path = %u.path.display(), mode = format!("{:o}", u.mode), "listening on the Unix socket");
        listeners.push(listen::Bound::Unix {
            listener: l,
            path: u.path.clone(),
        });
    }
    tracing::info!(%addr, scheme, data_dir = %cfg.data_dir.display(), startup_ms = started.elapsed().as_millis() as u64, "peat-gateway ready");
    if demo {
        print_demo_guide(&addr.to_string(), &cfg.data_dir);
    }
    Ok(Running {
        listeners,
        limits: listen::Limits {
            max_connections: cfg.max_connections,
            handshake_and_header_timeout: cfg.header_timeout,
            // A request may run up to its time limit without a byte moving.
            idle_timeout: cfg
                .idle_timeout
                .max(cfg.request_timeout + cfg.header_timeout),
            admission: listen::Admission::new(cfg.allow.clone(), cfg.max_connections_per_source),
        },
        tls: tls.map(|t| (t, super::reload::TlsFiles::from(cfg))),
        state,
        store,
        key_probe: cfg.key_probe,
        audit_retention: cfg.audit_retention,
    })
}

impl Running {
    async fn serve(self) -> anyhow::Result<()> {
        let cdc = self.state.cdc.clone();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let housekeeping = tokio::spawn(cdc.clone().housekeeping(stop_rx.clone()));
        let retention = tokio::spawn(audit_retention(
            self.state.tenancy.clone(),
            self.audit_retention,
            stop_rx.clone(),
        ));
        let key_probe = self.key_probe.map(|every| {
            let metrics = self.state.metrics.clone();
            tokio::spawn(peat_gateway::keys::health::watch(
                self.state.tenancy.keyring().clone(),
                self.state.keys.health.clone(),
                every,
                KEY_PROBE_TIMEOUT,
                stop_rx,
                move |ok| {
                    metrics.key_provider_up.set(i64::from(ok));
                    if !ok {
                        metrics.key_probe_failures.inc();
                    }
                },
            ))
        });
        let sources = self.state.sources.clone();
        let metrics = self.state.metrics.clone();
        let activity = self.state.activity.clone();
        let sampler = tokio::spawn(api::sample_activity(self.state.clone(), stop.subscribe()));
        let supervisor = tokio::spawn(super::service::supervise(
            self.state.clone(),
            stop.subscribe(),
        ));
        super::service::ready(&self.state);
        let app = api::router(self.state);
        let reloads = self.tls.map(|(state, files)| {
            tokio::spawn(super::reload::tls_reloads(
                state,
                files,
                metrics,
                activity,
                stop.subscribe(),
            ))
        });
        tokio::spawn(super::pages::release_after_start_up());
        listen::serve(self.listeners, app, self.limits, shutdown_signal()).await;
        super::service::stopping();
        let served: anyhow::Result<()> = Ok(());
        tracing::info!("listener closed; stopping sinks and flushing the stores");
        let _ = stop.send(true);
        let _ = housekeeping.await;
        let _ = retention.await;
        let _ = sampler.await;
        let _ = supervisor.await;
        if let Some(r) = reloads {
            let _ = r.await;
        }
        if let Some(p) = key_probe {
            let _ = p.await;
        }
        sources.shutdown();
        cdc.shutdown().await;
        cdc.outbox().shutdown().await;
        self.store.shutdown().await;
        served?;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// Applies audit retention shortly after start and then hourly.
async fn audit_retention(
    tenancy: Tenancy,
    keep: peat_gateway::tenant::AuditRetention,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = std::time::Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        match tenancy.prune_audit(keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                records = n,
                "audit records past retention pruned; checkpoint recorded"
            ),
            Err(e) => tracing::warn!(error = %e, "audit retention failed; will retry"),
        }
        wait = std::time::Duration::from_secs(3600);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Applies the config file's `[[sources]]`; a binding for a formation that does not exist,
/// or an invalid one, stops start-up.
async fn apply_config_sources(
    t: &Tenancy,
    list: &[peat_gateway::config::SourceConfig],
) -> anyhow::Result<()> {
    for c in list {
        let what = format!("[[sources]] {}/{}", c.org, c.app);
        let scope = Principal::Admin { dev_open: false }
            .scope(&c.org, Need::Manage, "config sources")
            .with_context(|| what.clone())?;
        let current = t.get_source(&scope, &c.app).await;
        let secrets_now = match &current {
            Ok(d) => t.source_secrets(d).await.ok().unwrap_or_default(),
            Err(_) => Default::default(),
        };
        let expose =
            |s: &Option<peat_gateway::secret::Secret>| s.as_ref().map(|s| s.expose().to_owned());
        let same = current.as_ref().is_ok_and(|d| {
            d.endpoint == c.endpoint
                && d.collections == c.collections
                && d.reconcile_secs == c.reconcile_secs.unwrap_or(300)
                && d.full_policy
                    == c.full_policy
                        .as_deref()
                        .and_then(|p| FullPolicy::parse(p).map(FullPolicy::name))
                && expose(&secrets_now.token) == expose(&c.token)
                && expose(&secrets_now.client_key_pem) == expose(&c.client_key_pem)
                && d.tls_ca_pem == c.tls_ca_pem
                && d.client_cert_pem == c.client_cert_pem
                && d.node_id == c.node_id
        });
        if same {
            continue;
        }
        let new = NewSource {
            endpoint: c.endpoint.clone(),
            collections: c.collections.clone(),
            token: c.token.clone(),
            reconcile_secs: c.reconcile_secs.unwrap_or(300),
            full_policy: c.full_policy.clone(),
            tls_ca_pem: c.tls_ca_pem.clone(),
            client_cert_pem: c.client_cert_pem.clone(),
            client_key_pem: c.client_key_pem.clone(),
            node_id: c.node_id.clone(),
        };
        match t.put_source(&scope, &c.app, new).await {
            Ok(_) => tracing::info!(org = %c.org, app = %c.app, endpoint = %peat_gateway::tenant::redact_endpoint(&c.endpoint), "source binding from the config file applied"),
            Err(TenantError::NotFound { .. }) => anyhow::bail!(
                "{what}: the formation does not exist; create it (POST /orgs/{}/formations) or remove the entry",
                c.org
            ),
            Err(e) => return Err(anyhow::anyhow!("{what}: {e}")),
        }
    }
    Ok(())
}

fn print_banner(title: &str, token: &str) {
    println!();
    println!("================================================================================");
    println!(" peat-gateway: {title}");
    println!();
    println!("   {token}");
    println!();
    println!(" Send it as:  Authorization: Bearer <token>");
    println!(" Only its hash is stored. Rotate it with:  peat-gateway admin-token rotate");
    println!("================================================================================");
    println!();
}
