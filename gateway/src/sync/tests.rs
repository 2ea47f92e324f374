//! The shared state's store against a real etcd member
//! (`switchyard_testkit::Etcd`): components larger than one request
//! stored in chunks and read back whole, the state read and watched, and
//! a store that does not answer refusing within its timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::SyncError;
use super::keys::{self, Key};
use super::state::Desired;
use super::store::Store;
use crate::config::ClusterConfig;

async fn store(etcd: &switchyard_testkit::Etcd) -> Store {
    let mut config = ClusterConfig::with_etcd(vec![etcd.endpoint()]);
    config.prefix = "/sync-test".into();
    config.connect_timeout_ms = 1000;
    let client = etcd_client::Client::connect(&config.etcd, None)
        .await
        .expect("client");
    Store::new(client, &config)
}

#[tokio::test]
async fn a_component_over_etcds_request_limit_goes_in_chunks_and_comes_back_whole() {
    let Some(etcd) = switchyard_testkit::Etcd::start().expect("etcd") else {
        return;
    };
    let store = store(&etcd).await;
    // 3.5 MiB: over etcd's 1.5 MiB request limit as one value.
    let component: Vec<u8> = (0..(7 * keys::CHUNK / 2))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let too_big = store
        .put(&Key::PolicyName("whole".into()), component.clone(), None)
        .await;
    assert!(
        matches!(too_big, Err(SyncError::Degraded(_))),
        "{too_big:?}"
    );
    let (reference, parts) = keys::chunks(&component);
    assert_eq!(reference.chunks, 4);
    for (index, part) in parts.iter().enumerate() {
        let key = Key::Chunk {
            hash: reference.hash.clone(),
            index: u32::try_from(index).unwrap(),
        };
        store.put(&key, part.to_vec(), None).await.expect("chunk");
    }
    let json = serde_json::to_vec(&reference).unwrap();
    store
        .put(&Key::PolicyName("big".into()), json, None)
        .await
        .expect("name");
    store
        .put(&Key::ServicePolicy("llama".into()), b"big".to_vec(), None)
        .await
        .expect("service");

    let (revision, entries) = store.list("").await.expect("list");
    assert!(revision > 0);
    let desired = Desired::from_entries(entries.iter().map(|(p, v)| (p.as_str(), v.as_slice())));
    assert_eq!(desired.policies.get("big"), Some(&reference));
    assert_eq!(
        desired.services.get("llama").map(String::as_str),
        Some("big")
    );
    let (_, chunks) = store
        .list(&format!("policies/{}/", reference.hash))
        .await
        .expect("chunks");
    let chunks: BTreeMap<u32, Vec<u8>> = chunks
        .into_iter()
        .filter_map(|(path, value)| match Key::parse(&path) {
            Some(Key::Chunk { index, .. }) => Some((index, value)),
            _ => None,
        })
        .collect();
    assert_eq!(
        keys::assemble(&reference, &chunks).expect("whole"),
        component
    );

    // Changes after the read come through the watch, in order.
    let mut watch = store.watch(revision + 1).await.expect("watch");
    store
        .put(&Key::Drain("gpu-1".into()), b"1".to_vec(), None)
        .await
        .expect("drain");
    let lease = store.lease(5).await.expect("lease");
    store
        .put(&Key::CachePurge("p1".into()), b"*".to_vec(), Some(lease))
        .await
        .expect("purge");
    store
        .delete_prefix(&format!("policies/{}/", reference.hash))
        .await
        .expect("forget chunks");
    let mut seen = Vec::new();
    while seen.len() < 2 + 4 {
        let response = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("in time")
            .expect("watch")
            .expect("open");
        for event in response.events() {
            let kv = event.kv().unwrap();
            seen.push(store.relative(kv.key()).unwrap().to_string());
        }
    }
    assert_eq!(&seen[..2], ["drains/gpu-1", "cache-purges/p1"]);
    assert!(seen[2..].iter().all(|p| p.starts_with("policies/")));
}

#[tokio::test]
async fn changes_are_refused_within_the_timeout_while_etcd_is_down() {
    let Some(mut etcd) = switchyard_testkit::Etcd::start().expect("etcd") else {
        return;
    };
    let store = store(&etcd).await;
    store
        .put(&Key::Drain("n".into()), b"1".to_vec(), None)
        .await
        .expect("up");
    etcd.stop();
    let start = Instant::now();
    let refused = store.delete(&Key::Drain("n".into())).await;
    assert!(
        matches!(refused, Err(SyncError::Degraded(_))),
        "{refused:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    etcd.restart().expect("restart");
    let start = Instant::now();
    loop {
        match store.list("drains/").await {
            Ok((_, entries)) => {
                assert_eq!(entries.len(), 1, "the data outlived the restart");
                break;
            }
            Err(error) => assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd back, still {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
