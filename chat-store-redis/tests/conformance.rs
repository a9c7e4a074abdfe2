//! chat-core's conformance suite over `RedisStore`: on one Redis (each test its own
//! redis-server) and on a Redis Cluster (shared by the tests running at once); each test its
//! own key prefix.

use std::sync::Arc;

use chat_core::NodeId;
use chat_core::testing::Fixture;
use chat_store_redis::test_server::{RedisCluster, RedisServer};
use chat_store_redis::{RedisConfig, RedisStore};

async fn fixture() -> Fixture {
    let server = RedisServer::start();
    let prefix = format!("conf{}:", uuid::Uuid::new_v4().simple());
    let store = RedisStore::connect(&server.url(), &prefix, NodeId::random())
        .await
        .expect("connect to the test redis-server");
    Fixture::new(Arc::new(store.clone()), Arc::new(store)).keep_alive(server)
}

chat_core::store_conformance!(redis, fixture());

async fn cluster_fixture() -> Fixture {
    // One cluster (3 masters, 3 replicas) for the tests of this binary that run at once.
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::shared(Default::default()))
        .await
        .expect("start the test cluster");
    let prefix = format!("conf{}:", uuid::Uuid::new_v4().simple());
    let store = RedisStore::connect_config(
        &RedisConfig::cluster(&cluster.urls()),
        &prefix,
        NodeId::random(),
    )
    .await
    .expect("connect to the test cluster");
    assert!(store.is_cluster());
    Fixture::new(Arc::new(store.clone()), Arc::new(store)).keep_alive(cluster)
}

chat_core::store_conformance!(redis_cluster, cluster_fixture());
