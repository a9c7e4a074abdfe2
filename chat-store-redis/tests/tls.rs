//! `RedisStore` over TLS (`rediss://`) with AUTH as an ACL user granted only
//! [`ACL_COMMANDS`], as against a managed Redis service: the whole conformance suite, on one
//! Redis and on a Redis Cluster whose nodes speak TLS to clients and to each other (seeded with
//! their TLS ports), and the refusals (a wrong password, an untrusted CA, plain text to the TLS
//! port).
//!
//! Each test starts its own `redis-server --tls-port` with certificates made here by `rcgen`
//! (a CA, and a server certificate for 127.0.0.1 signed by it).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chat_core::NodeId;
use chat_core::testing::Fixture;
use chat_store_redis::test_server::{RedisCluster, RedisServer, RedisServerOptions, TlsFiles};
use chat_store_redis::{ACL_COMMANDS, ConnectError, RedisConfig, RedisStore, RedisTls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

const USER: &str = "chat";
const PASSWORD: &str = "s3cret-for-tests";
/// Keys and channels of every test here start with this (the ACL user's patterns).
const PREFIX_ROOT: &str = "tlsconf";

/// The PEM files of a CA and of a server certificate it signed, made once per test process.
struct Certs {
    dir: PathBuf,
    /// Another CA's certificate, which signed nothing here.
    stranger_ca: PathBuf,
}

impl Certs {
    fn server(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("server.crt"),
            key: self.dir.join("server.key"),
            ca: self.dir.join("ca.crt"),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("chat-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
                .expect("CA certificate")
        };
        let issuer = ca("chat test CA");
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params")
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.join(name), pem).expect("write a PEM file");
        };
        write("ca.crt", issuer.pem());
        write("server.crt", server.pem());
        write("server.key", server_key.serialize_pem());
        write("stranger.crt", ca("another CA").pem());
        Certs {
            stranger_ca: dir.join("stranger.crt"),
            dir,
        }
    })
}

/// A redis-server with a TLS port and the ACL user `chat`, limited to the store's commands and
/// to the keys and channels under [`PREFIX_ROOT`].
fn tls_server() -> RedisServer {
    RedisServer::start_with(RedisServerOptions {
        tls: Some(certs().server()),
        users: vec![format!(
            "{USER} on >{PASSWORD} resetkeys ~{PREFIX_ROOT}* resetchannels &{PREFIX_ROOT}* -@all \
             {ACL_COMMANDS}"
        )],
        ..RedisServerOptions::default()
    })
}

fn url(server: &RedisServer, password: &str) -> String {
    let port = server.tls_port().expect("a TLS port");
    format!("rediss://{USER}:{password}@127.0.0.1:{port}/")
}

fn trusting(ca: &Path) -> RedisTls {
    RedisTls::from_files(Some(ca), None, None).expect("read the CA file")
}

async fn fixture() -> Fixture {
    let server = tls_server();
    let prefix = format!("{PREFIX_ROOT}{}:", uuid::Uuid::new_v4().simple());
    let store = RedisStore::connect_with_tls(
        &url(&server, PASSWORD),
        &prefix,
        NodeId::random(),
        &trusting(&certs().ca()),
    )
    .await
    .expect("connect over TLS as the ACL user");
    Fixture::new(Arc::new(store.clone()), Arc::new(store)).keep_alive(server)
}

chat_core::store_conformance!(tls, fixture());

/// The options of every node of the TLS cluster: TLS between clients and nodes, between nodes
/// and to replicas, and the ACL user, whose key patterns also cover the directory's hash tag
/// (`{<prefix>}…`, see the README's ACL section).
fn tls_cluster_options() -> RedisServerOptions {
    RedisServerOptions {
        tls: Some(certs().server()),
        users: vec![format!(
            "{USER} on >{PASSWORD} resetkeys ~{PREFIX_ROOT}* ~{{{PREFIX_ROOT}* resetchannels \
             &{PREFIX_ROOT}* -@all {ACL_COMMANDS}"
        )],
        ..RedisServerOptions::default()
    }
}

/// The store on a Redis Cluster over TLS, as the ACL user, seeded with the nodes' TLS ports.
async fn cluster_fixture() -> Fixture {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::shared(tls_cluster_options()))
        .await
        .expect("start the TLS cluster");
    let seeds: Vec<String> = cluster
        .tls_urls()
        .iter()
        .map(|u| u.replacen("rediss://", &format!("rediss://{USER}:{PASSWORD}@"), 1))
        .collect();
    let prefix = format!("{PREFIX_ROOT}{}:", uuid::Uuid::new_v4().simple());
    let config = RedisConfig {
        tls: trusting(&certs().ca()),
        ..RedisConfig::cluster(&seeds)
    };
    let store = RedisStore::connect_config(&config, &prefix, NodeId::random())
        .await
        .expect("connect to the TLS cluster as the ACL user");
    assert!(store.is_cluster());
    Fixture::new(Arc::new(store.clone()), Arc::new(store)).keep_alive(cluster)
}

chat_core::store_conformance!(tls_cluster, cluster_fixture());

/// What a connection that must fail answers, within a bound.
async fn refused(url: &str, tls: &RedisTls) -> ConnectError {
    let prefix = format!("{PREFIX_ROOT}refused:");
    let attempt = RedisStore::connect_with_tls(url, &prefix, NodeId::random(), tls);
    match tokio::time::timeout(Duration::from_secs(15), attempt).await {
        Err(_) => panic!("a refused connection hung"),
        Ok(Ok(_)) => panic!("connected to {url} although it must be refused"),
        Ok(Err(e)) => e,
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused() {
    let server = tls_server();
    let e = refused(&url(&server, "wrong"), &trusting(&certs().ca())).await;
    assert!(matches!(e, ConnectError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let server = tls_server();
    let e = refused(&url(&server, PASSWORD), &trusting(&certs().stranger_ca)).await;
    assert!(matches!(e, ConnectError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn the_system_roots_do_not_trust_a_private_ca() {
    let server = tls_server();
    let e = refused(&url(&server, PASSWORD), &RedisTls::default()).await;
    assert!(matches!(e, ConnectError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn tls_files_need_a_rediss_url() {
    let server = tls_server();
    let plain = format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}/", server.port());
    assert!(matches!(
        refused(&plain, &trusting(&certs().ca())).await,
        ConnectError::Config(_)
    ));
    let missing = RedisTls::from_files(Some(Path::new("/nonexistent/ca.crt")), None, None);
    assert!(matches!(missing, Err(ConnectError::Config(_))));
    let half = RedisTls::from_files(None, Some(&certs().ca()), None);
    assert!(matches!(half, Err(ConnectError::Config(_))));
}
