//! Test harness: a real nats-server with JetStream in a temporary directory.
//!
//! ```no_run
//! # async fn t() {
//! let nats = voiyd_testkit::nats::TestNats::start().await;
//! let client = nats.client().await;
//! # drop(client);
//! nats.stop().await;
//! # }
//! ```
//! Panics (with the reason) when nats-server is missing or cannot start: a test that
//! needs NATS cannot run without it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use voiyd_nats::connect::{connect, ConnectOptions};
use voiyd_nats::embedded::{find_binary, EmbeddedConfig, EmbeddedError, EmbeddedNats};

/// A nats-server started for one test; stopped by [`TestNats::stop`] or on drop.
#[derive(Debug)]
pub struct TestNats {
    // Declared first so the server is gone before its directory is removed.
    server: EmbeddedNats,
    dir: tempfile::TempDir,
}

impl TestNats {
    /// Starts nats-server on a free loopback port, in a fresh temporary directory, with
    /// the embedded default durability (fsync before every acknowledgement).
    pub async fn start() -> TestNats {
        Self::start_with_sync(voiyd_nats::SyncPolicy::default()).await
    }

    /// [`TestNats::start`] with another sync policy (benchmarks compare them).
    pub async fn start_with_sync(sync: voiyd_nats::SyncPolicy) -> TestNats {
        let binary = find_binary(None).unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new()
            .prefix("voiyd-test-nats-")
            .tempdir()
            .expect("cannot create a temporary directory");
        // A free port can be taken between choosing and binding: try a few.
        let mut last = None;
        for _ in 0..5 {
            let cfg = EmbeddedConfig::new(
                binary.clone(),
                dir.path().to_path_buf(),
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_port()),
                "voiyd-test",
            );
            let cfg = EmbeddedConfig { sync, ..cfg };
            match EmbeddedNats::start(cfg).await {
                Ok(server) => return TestNats { server, dir },
                Err(e @ EmbeddedError::PortInUse { .. }) => last = Some(e),
                // The port was free when picked and taken before nats-server bound it
                // (another test's process): nats-server then exits saying so.
                Err(e) if e.to_string().contains("address already in use") => last = Some(e),
                Err(e) => panic!("cannot start the test nats-server: {e}"),
            }
        }
        panic!(
            "cannot start the test nats-server: {}",
            last.expect("at least one attempt")
        );
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        self.server.client_url()
    }

    /// A connected client (panics if connecting fails).
    pub async fn client(&self) -> async_nats::Client {
        connect(&ConnectOptions {
            name: "voiyd-test".to_string(),
            ..ConnectOptions::from_urls(&self.url())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A JetStream context on a new client.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }

    /// The supervised server, e.g. to read its PID.
    pub fn server(&self) -> &EmbeddedNats {
        &self.server
    }

    /// The temporary data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server and removes its directory.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}
