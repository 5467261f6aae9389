//! Heartbeats: the node's status (capacity, allocation, volumes) every --heartbeat, which also registers it.

use super::*;

pub(super) async fn heartbeats<R: Runtime>(s: Arc<Shared<R>>, info: crate::runtime::RuntimeInfo) {
    let (mut labels, _) = host_facts(&s.cfg.name);
    let capacity = s.capacity;
    // One per agent run: a node deleted while this run goes on is not re-registered by
    // it (servers keep the deleted session); a restarted agent joins again.
    let session = {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{:x}-{:x}", nanos, std::process::id())
    };
    labels.extend(s.cfg.labels.clone());
    let subject = names::node::heartbeat(&s.cfg.name);
    let mut tick = tokio::time::interval(s.cfg.heartbeat_every);
    loop {
        tick.tick().await;
        let status = NodeStatus {
            hostname: labels.get("voiyd.io/hostname").cloned().unwrap_or_default(),
            runtime: info.name.clone(),
            runtime_version: info.version.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: labels.get("voiyd.io/arch").cloned().unwrap_or_default(),
            capacity: Some(capacity),
            allocated: Some(allocated(&s)),
            subnet: s.rt.subnet().unwrap_or_default(),
            volumes: s.rt.volumes(&volumes_in_use(&s)),
            session: session.clone(),
            agent_digest: s.cfg.agent_digest.clone(),
            xkey: s.cfg.xkey.clone(),
            mesh: s.cfg.mesh.as_ref().map(|m| m.status()),
            ..Default::default()
        };
        let report = NodeStatusReport {
            node: s.cfg.name.clone(),
            labels: labels.clone(),
            status: Some(status),
        };
        if let Err(e) = s
            .client
            .publish(subject.clone(), report.encode_to_vec().into())
            .await
        {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }
}

/// What the node's assigned tasks request, counted as the scheduler counts them.
pub(super) fn allocated<R: Runtime>(s: &Shared<R>) -> NodeResources {
    let workers = s.workers.lock().expect("workers lock");
    let sum = workers
        .values()
        .filter_map(|w| w.load.as_ref())
        .fold(voiyd_messages::requests::Requests::default(), |a, b| {
            a.plus(b.requests)
        });
    NodeResources {
        cpu_millis: sum.cpu_millis,
        memory_bytes: sum.memory_bytes,
    }
}
