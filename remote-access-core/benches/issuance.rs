//! Credential issuance: generate (Ed25519 key pair, username, VNC password) + issue (session,
//! uniqueness checks) + store (in-memory), one build per iteration, on one thread.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap here is a failed run
#![allow(missing_docs)] // `criterion_group!` defines undocumented functions

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use remote_access_core::{Authority, AuthorityOptions, BuildId, BuildRequest, Trigger};

fn issuance(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let authority = Authority::new(AuthorityOptions::default()).expect("authority");
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("credential");
    group.throughput(Throughput::Elements(1));
    group.bench_function("issue", |b| {
        b.iter(|| {
            let id = BuildId::new(format!("bench-{}", next.fetch_add(1, Ordering::Relaxed))).expect("id");
            runtime.block_on(authority.issue(BuildRequest::new(id, Trigger::Manual, true))).expect("issue")
        })
    });
    group.finish();
}

criterion_group!(benches, issuance);
criterion_main!(benches);
