//! The data plane as a Rust object: start, update, stop, stats. It owns the
//! tokio runtime and the bound sockets; the Python class (`dataplane.rs`) is
//! a thin shell around it. Nothing imports the engine back: the state each
//! request reads lives below, in `shared`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::Config;
use crate::dns::Answerer;
use crate::drain::{drain_all, Drain};
use crate::error::{Error, Result};
use crate::listener;
use crate::runtime::Workers;
use crate::shared::Shared;
use crate::snapshot::{Bindings, ListenerId, Snapshot};

/// Key of a bound socket: admin, or a listener by name.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Slot {
    Admin,
    Named(String),
}

impl Slot {
    fn label(&self) -> &str {
        match self {
            Slot::Admin => "admin",
            Slot::Named(n) => n,
        }
    }
}

struct Bound {
    id: ListenerId,
    slot: Slot,
    configured: SocketAddr,
    local: SocketAddr,
    drain: Drain,
}

/// Where a wanted listener comes from in an update.
enum Placement {
    /// An already bound socket (index into `State::bound`), kept as it is.
    Kept(usize),
    /// A socket bound for this update, not serving until the commit.
    Fresh(Bound, tokio::net::TcpListener),
}

impl Placement {
    fn binding(&self, bound: &[Bound]) -> (ListenerId, SocketAddr) {
        let b = match self {
            Placement::Kept(i) => &bound[*i],
            Placement::Fresh(b, _) => b,
        };
        (b.id, b.local)
    }
}

enum Phase {
    Created,
    Running(Workers),
    Stopped,
}

struct State {
    phase: Phase,
    config: Arc<Config>,
    bound: Vec<Bound>,
    /// Ids of the unbound listeners, by name: stable across updates, so that
    /// their connections keep finding them, as bound ones do.
    unbound: HashMap<String, ListenerId>,
    next_id: ListenerId,
    version: u64,
    workers: usize,
    /// The `dns` section's answerer, when running.
    dns: Option<Answerer>,
}

pub struct Engine {
    shared: Arc<Shared>,
    state: Mutex<State>,
}

// === impl Engine ===

impl Engine {
    pub fn new(config: Config, workers: Option<usize>) -> Self {
        let workers = workers
            .filter(|&w| w > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Engine {
            shared: Arc::new(Shared::new()),
            state: Mutex::new(State {
                phase: Phase::Created,
                config: Arc::new(config),
                bound: Vec::new(),
                unbound: HashMap::new(),
                next_id: 1,
                version: 0,
                workers,
                dns: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds every listener, then serves; returns once all are bound.
    pub fn start(&self) -> Result<()> {
        let mut st = self.lock();
        match st.phase {
            Phase::Created => {}
            Phase::Running(_) => {
                return Err(Error::State("the data plane is already running".into()))
            }
            Phase::Stopped => {
                return Err(Error::State(
                    "a stopped data plane cannot be started again".into(),
                ))
            }
        }
        let runtime = Workers::new(st.workers)?;
        runtime.handle().spawn(sweep(self.shared.clone()));
        let config = st.config.clone();
        st.phase = Phase::Running(runtime);
        if let Err(e) = self.apply(&mut st, config) {
            if let Phase::Running(rt) = std::mem::replace(&mut st.phase, Phase::Created) {
                rt.shutdown_background();
            }
            return Err(e);
        }
        self.shared.set_ready(true);
        Ok(())
    }

    /// Swaps in a new config atomically. Before start it only replaces the
    /// config to start with. A config that fails leaves everything as it was.
    pub fn update(&self, config: Config) -> Result<u64> {
        let mut st = self.lock();
        match st.phase {
            Phase::Created => {
                st.config = Arc::new(config);
                Ok(st.version)
            }
            Phase::Running(_) => self.apply(&mut st, Arc::new(config)),
            Phase::Stopped => Err(Error::State("the data plane is stopped".into())),
        }
    }

    /// Counts an update that was refused (it did not parse, validate or
    /// bind), so the admin stats show a reload that did not land.
    pub fn rejected(&self, error: &Error) {
        tracing::warn!("config update refused; the running config stays: {error}");
        self.shared.registry.config.reject(error.to_string());
    }

    fn apply(&self, st: &mut State, config: Arc<Config>) -> Result<u64> {
        let Phase::Running(rt) = &st.phase else {
            return Err(Error::State("the data plane is not running".into()));
        };
        let handle = rt.handle().clone();
        let _enter = handle.enter();
        let workers = rt.handles().clone();

        // Which sockets stay, which are new; bind the new ones before touching anything.
        let mut wanted: Vec<(Slot, SocketAddr)> = Vec::new();
        if let Some(a) = &config.admin {
            wanted.push((Slot::Admin, a.address));
        }
        wanted.extend(
            config
                .listeners
                .iter()
                .filter(|l| l.bind)
                .map(|l| (Slot::Named(l.name.clone()), l.address)),
        );

        // Everything fallible happens here, before the swap: a failure drops
        // the fresh sockets and leaves the running config untouched.
        let mut plan: Vec<Placement> = Vec::with_capacity(wanted.len());
        let mut claimed = vec![false; st.bound.len()];
        for (slot, addr) in &wanted {
            // Same socket: same configured address, or the address it was actually bound to
            // (a config that names the port a `:0` listener got). A `:0` is only reused by name.
            let same = |b: &Bound| {
                (b.configured == *addr && (b.slot == *slot || addr.port() != 0)) || b.local == *addr
            };
            let found = st
                .bound
                .iter()
                .enumerate()
                .filter(|(i, b)| !claimed[*i] && same(b))
                .min_by_key(|(_, b)| b.slot != *slot)
                .map(|(i, _)| i);
            if let Some(i) = found {
                claimed[i] = true;
                plan.push(Placement::Kept(i));
                continue;
            }
            let bind_error = |source| Error::Bind {
                listener: slot.label().to_string(),
                address: *addr,
                source,
            };
            let socket = listener::bind(*addr).map_err(bind_error)?;
            let local = socket.local_addr()?;
            let socket = tokio::net::TcpListener::from_std(socket).map_err(bind_error)?;
            let id = st.next_id;
            st.next_id += 1;
            let bound = Bound {
                id,
                slot: slot.clone(),
                configured: *addr,
                local,
                drain: Drain::default(),
            };
            plan.push(Placement::Fresh(bound, socket));
        }

        // The DNS answerer's socket: kept while its address stays (records
        // are read from the snapshot per query), otherwise bound now.
        let dns_socket = match &config.dns {
            Some(d) if !st.dns.as_ref().is_some_and(|a| a.serves(d.address)) => {
                Some(crate::dns::bind(d.address).map_err(|source| Error::Bind {
                    listener: "dns".into(),
                    address: d.address,
                    source,
                })?)
            }
            _ => None,
        };

        let has_admin = config.admin.is_some();
        let mut placed = plan[usize::from(has_admin)..].iter();
        let mut unbound = HashMap::new();
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            if l.bind {
                let p = placed.next().expect("a placement per bound listener");
                listeners.push(p.binding(&st.bound));
                continue;
            }
            let id = match st.unbound.get(&l.name) {
                Some(&id) => id,
                None => {
                    st.next_id += 1;
                    st.next_id - 1
                }
            };
            unbound.insert(l.name.clone(), id);
            listeners.push((id, l.address));
        }
        let bindings = Bindings {
            admin: has_admin.then(|| plan[0].binding(&st.bound)),
            listeners,
        };
        let version = st.version + 1;
        let previous = self.shared.snapshot.load_full();
        let snapshot = Snapshot::compile(
            config.clone(),
            &bindings,
            &previous,
            &self.shared.registry,
            &self.shared.identity,
            version,
            st.workers,
        )?;

        // Commit: identity first (new listeners handshake with it at once),
        // then swap, start new accept loops, drain the sockets no longer wanted.
        // A config without identity leaves the installed one: nothing uses it.
        if let Some(identity) = &config.identity {
            // Stored every time (the roots may change under the same SVID);
            // logged when the certificate changes.
            let previous = self.shared.identity.swap(Some(identity.clone()));
            if previous.is_none_or(|p| p.key.cert != identity.key.cert) {
                tracing::info!(
                    id = %identity.id,
                    not_after = identity.not_after,
                    "identity installed"
                );
            }
        }
        self.shared.snapshot.store(Arc::new(snapshot));
        st.unbound = unbound;
        st.version = version;
        st.config = config.clone();
        let mut old: Vec<Option<Bound>> = std::mem::take(&mut st.bound)
            .into_iter()
            .map(Some)
            .collect();
        let mut next = Vec::with_capacity(plan.len());
        for (placement, (slot, _)) in plan.into_iter().zip(wanted) {
            match placement {
                Placement::Kept(i) => {
                    let mut b = old[i].take().expect("a socket is kept once");
                    b.slot = slot;
                    next.push(b);
                }
                Placement::Fresh(b, socket) => {
                    let d = b.drain.clone();
                    d.tracker.spawn(listener::accept_loop(
                        socket,
                        b.id,
                        self.shared.clone(),
                        d.clone(),
                        workers.clone(),
                    ));
                    tracing::info!("listener '{}' serving on {}", b.slot.label(), b.local);
                    next.push(b);
                }
            }
        }
        for gone in old.into_iter().flatten() {
            tracing::info!(
                "listener '{}' on {} removed; draining",
                gone.slot.label(),
                gone.local
            );
            let grace = config.drain_timeout;
            handle.spawn(async move { gone.drain.drain(grace).await });
        }
        st.bound = next;
        if dns_socket.is_some() || config.dns.is_none() {
            if let Some(old) = st.dns.take() {
                old.stop(&self.shared);
            }
        }
        if let Some(bound) = dns_socket {
            st.dns = Some(Answerer::start(bound, self.shared.clone()));
        }
        self.shared.registry.config.applied.inc();
        tracing::info!(version, "config applied");
        Ok(version)
    }

    /// Stops accepting, lets in-flight work finish for up to `grace`, then
    /// closes everything. Idempotent.
    pub fn stop(&self, grace: Duration) {
        let mut st = self.lock();
        self.shared.set_ready(false);
        let Phase::Running(rt) = std::mem::replace(&mut st.phase, Phase::Stopped) else {
            st.phase = Phase::Stopped;
            return;
        };
        if let Some(dns) = st.dns.take() {
            dns.stop(&self.shared);
        }
        let drains: Vec<Drain> = st.bound.drain(..).map(|b| b.drain).collect();
        rt.block_on(drain_all(&drains, grace));
        rt.shutdown(Duration::from_secs(1));
        tracing::info!("data plane stopped");
    }

    pub fn is_running(&self) -> bool {
        matches!(self.lock().phase, Phase::Running(_))
    }

    /// What request handlers share (metrics, telemetry, taps).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn stats(&self) -> Value {
        self.shared.stats()
    }

    /// The active config, secrets redacted; before start, the one to start with.
    pub fn config(&self) -> Value {
        self.lock().config.redacted()
    }

    /// The active config as it runs (what admin `/config` serves): secrets
    /// redacted, resilience defaults written out; before start, the one to start with.
    pub fn effective_config(&self) -> Value {
        self.lock().config.effective()
    }

    /// Bound address of each listener by name (useful with port 0).
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.lock()
            .bound
            .iter()
            .map(|b| (b.slot.label().to_string(), b.local))
            .collect()
    }

    pub fn addresses_json(&self) -> Value {
        Value::Object(
            self.addresses()
                .into_iter()
                .map(|(n, a)| (n, Value::String(a.to_string())))
                .collect::<Map<_, _>>(),
        )
    }
}

/// How often idle upstream connections are looked over.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Every `SWEEP_EVERY`, the current config's clusters close the idle
/// upstream connections their upstreams closed (see `Cluster::sweep`). One
/// task for the data plane; it ends with the runtime.
async fn sweep(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let snapshot = shared.snapshot.load_full();
        for cluster in snapshot.clusters.iter().chain(&snapshot.passthrough) {
            cluster.sweep();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Phase::Running(rt) = std::mem::replace(&mut st.phase, Phase::Stopped) {
            rt.shutdown_background();
        }
    }
}
