//! The Redis Cluster test helper itself: six nodes form a cluster with three masters that routes
//! keys between nodes, and a killed master is replaced by its replica, which kept the data.

use std::process::Command;
use std::time::{Duration, Instant};

use chat_store_redis::test_server::RedisCluster;

/// `redis-cli -c -p <port> <args…>` (following `MOVED` redirections); its output, trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(
        out.status.success(),
        "redis-cli {args:?} on {port}: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn cluster_has_three_masters_and_routes_keys() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!("cluster started in {:?}", started.elapsed());

    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "masters: {masters:?}");
    let ports = cluster.ports();
    assert_eq!(ports.len(), 6);
    assert_eq!(
        cluster.urls(),
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(cluster.url(), cluster.urls().join(","));
    let counts = cluster.slot_counts();
    assert_eq!(counts.len(), 3);
    assert_eq!(counts.iter().map(|&(_, n)| n).sum::<usize>(), 16384);

    assert_eq!(cli(ports[0], &["SET", "{x}a", "1"]), "OK");
    assert_eq!(cli(ports[3], &["GET", "{x}a"]), "1");
    let owner = cluster.master_of_key("{x}a");
    assert!(masters.contains(&owner), "{owner} not in {masters:?}");
    // Asked directly (no redirection), the owner has the key.
    let direct = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &owner.to_string(), "GET", "{x}a"])
        .output()
        .expect("run redis-cli");
    assert_eq!(String::from_utf8_lossy(&direct.stdout).trim(), "1");
}

#[test]
fn killed_master_fails_over_to_its_replica_with_the_data() {
    let cluster = RedisCluster::start();
    let key = "{f}k";
    let master = cluster.master_of_key(key);
    assert_eq!(cli(master, &["SET", key, "v"]), "OK");
    // The replica has the write before its master dies.
    assert_eq!(cli(master, &["WAIT", "1", "1000"]), "1");

    cluster.kill(master);
    let took = cluster.wait_for_failover(master, Duration::from_secs(15));
    eprintln!("failover of {master} took {took:?}");

    let new_master = cluster.master_of_key(key);
    assert_ne!(new_master, master);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "masters: {masters:?}");
    assert!(!masters.contains(&master));
    let other = cluster
        .ports()
        .into_iter()
        .find(|&p| p != master && p != new_master)
        .expect("another live node");
    assert_eq!(cli(other, &["GET", key]), "v");
}
