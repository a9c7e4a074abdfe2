//! chat-core's conformance suite over `RedisStore`: each test gets its own redis-server and
//! its own key prefix.

use std::sync::Arc;

use chat_core::NodeId;
use chat_core::testing::Fixture;
use chat_store_redis::RedisStore;
use chat_store_redis::test_server::RedisServer;

async fn fixture() -> Fixture {
    let server = RedisServer::start();
    let prefix = format!("conf{}:", uuid::Uuid::new_v4().simple());
    let store = RedisStore::connect(&server.url(), &prefix, NodeId::random())
        .await
        .expect("connect to the test redis-server");
    Fixture::new(Arc::new(store.clone()), Arc::new(store)).keep_alive(server)
}

chat_core::store_conformance!(redis, fixture());
