//! Feeds arbitrary request targets (`path?query`) to the UI's JSON API over
//! a store holding a few dependencies, DNS lookups and a path test. Any
//! panic is a bug; bad parameters must be a 4xx naming the parameter.
#![no_main]

use std::sync::{Arc, OnceLock};

use flowscope_exporters::ui::{Ui, api};
use flowscope_model::hist::{DNS_BOUNDS, RTT_BOUNDS};
use flowscope_model::metrics::{DNS_DURATION, FLOW_IO, TCP_FAILED, TCP_RTT};
use flowscope_model::names::{attr, resource};
use flowscope_model::{Attrs, Histogram, MetricBatch, Point, PointValue, Role};
use flowscope_otel_config::exporters::UiExporterConfig;
use libfuzzer_sys::fuzz_target;

const S: u64 = 1_000_000_000;

fn ui() -> &'static Ui {
    static UI: OnceLock<Ui> = OnceLock::new();
    UI.get_or_init(|| {
        let ui = Ui::new(&UiExporterConfig::default(), &|_| None).expect("default ui");
        for i in 1..=30u64 {
            let end = (1_000_000 + i * 10) * S;
            let mut b = MetricBatch::new(end - 10 * S, end);
            for (svc, peer, peer_svc) in [
                ("web", "198.18.0.2", Some("api")),
                ("api", "198.18.0.3", None),
                ("cron", "2001:db8::1", Some("db")),
            ] {
                let res = Arc::new(
                    Attrs::new()
                        .with(resource::SERVICE_NAME, svc)
                        .with(resource::HOST_NAME, "node-1"),
                );
                let mut a = Attrs::new()
                    .with(attr::FLOW_ROLE, Role::Client.as_str())
                    .with(attr::NETWORK_TRANSPORT, "tcp")
                    .with(attr::PEER_ADDRESS, peer)
                    .with(attr::PEER_PORT, 443u16);
                if let Some(p) = peer_svc {
                    a.set(attr::PEER_SERVICE_NAME, p);
                }
                let mut push = |metric, attrs: Attrs, value| {
                    b.points.push(Point {
                        resource: res.clone(),
                        metric,
                        attrs,
                        value,
                    })
                };
                for dir in [attr::TRANSMIT, attr::RECEIVE] {
                    push(
                        FLOW_IO,
                        a.clone().with(attr::IO_DIRECTION, dir),
                        PointValue::Int(1000 + i),
                    );
                }
                push(
                    TCP_FAILED,
                    a.clone().with(attr::ERROR_TYPE, "refused"),
                    PointValue::Int(i % 3),
                );
                let mut h = Histogram::new(Arc::from(RTT_BOUNDS));
                h.record(0.0003 * i as f64);
                push(TCP_RTT, a.clone(), PointValue::Histogram(h));
                let mut d = Histogram::new(Arc::from(DNS_BOUNDS));
                d.record(0.002);
                push(
                    DNS_DURATION,
                    Attrs::new()
                        .with(attr::SERVER_ADDRESS, "198.18.0.53")
                        .with(attr::DNS_QUESTION_NAME, "db.example")
                        .with(attr::DNS_RESPONSE_CODE, "NXDOMAIN"),
                    PointValue::Histogram(d),
                );
            }
            ui.store.lock().expect("store").insert(&b);
        }
        ui
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = api::Params::parse(query);
    let reply = api::answer(ui(), path, &params);
    let status = reply.status.as_u16();
    assert!(
        status == 200 || (400..500).contains(&status),
        "{target:?} answered {status}"
    );
});
