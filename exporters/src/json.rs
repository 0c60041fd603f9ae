//! The OTLP protobuf JSON mapping of a request, as the `file` exporter and
//! `otlphttp` with `encoding: json` write it.
//!
//! opentelemetry-proto's `with-serde` feature already follows the OTLP/JSON
//! rules this needs (checked by the tests below against the specification,
//! <https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>):
//! lowerCamelCase field names, 64-bit integers (`timeUnixNano`, `asInt`,
//! `count`, `bucketCounts`, `intValue`) as decimal strings, enums
//! (`aggregationTemporality`) as their numbers, `AnyValue` as
//! `{"stringValue": ...}`. Fields at their default value may appear; OTLP/JSON
//! receivers accept that. Doubles that JSON cannot carry (NaN, infinities)
//! never reach it: the encoder leaves an empty histogram's min/max out.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

/// One request as one line of OTLP JSON (no trailing newline).
pub fn request_to_json(r: &ExportMetricsServiceRequest) -> Result<String, serde_json::Error> {
    serde_json::to_string(r)
}

/// Parses one line of OTLP JSON back (for tests and the HTTP test receiver).
pub fn request_from_json(s: &str) -> Result<ExportMetricsServiceRequest, serde_json::Error> {
    serde_json::from_str(s)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowscope_model::metrics::{FLOW_IO, TCP_ACTIVE, TCP_RTT};
    use flowscope_model::names::attr;
    use flowscope_model::{Attrs, Histogram, MetricBatch, Point, PointValue};
    use serde_json::Value as J;

    use super::*;
    use crate::encode::encode;

    #[test]
    fn follows_the_otlp_json_mapping() {
        let r = Arc::new(
            Attrs::new()
                .with("service.name", "checkout")
                .with("process.pid", 7i64),
        );
        let a = Attrs::new()
            .with(attr::PEER_PORT, 443u16)
            .with(attr::OVERFLOW, true);
        let mut h = Histogram::new(Arc::from(&[0.5][..]));
        h.record(0.25);
        h.record(2.0);
        let mut b = MetricBatch::new(1_700_000_000_123_456_789, 1_700_000_010_123_456_789);
        // Above 2^53: a JSON number would lose the last digits.
        let big = 9_007_199_254_740_993u64;
        b.points = vec![
            Point {
                resource: r.clone(),
                metric: FLOW_IO,
                attrs: a.clone(),
                value: PointValue::Int(big),
            },
            Point {
                resource: r.clone(),
                metric: TCP_ACTIVE,
                attrs: a.clone(),
                value: PointValue::Double(1.5),
            },
            Point {
                resource: r,
                metric: TCP_RTT,
                attrs: a,
                value: PointValue::Histogram(h),
            },
        ];
        let enc = encode(&b);
        let line = request_to_json(&enc.request).unwrap();
        assert!(!line.contains('\n'));
        let v: J = serde_json::from_str(&line).unwrap();

        let rm = &v["resourceMetrics"][0];
        let res_attrs = &rm["resource"]["attributes"];
        assert_eq!(res_attrs[0]["key"], "process.pid");
        assert_eq!(res_attrs[0]["value"]["intValue"], "7");
        assert_eq!(res_attrs[1]["value"]["stringValue"], "checkout");
        let sm = &rm["scopeMetrics"][0];
        assert_eq!(sm["scope"]["name"], "flowscope");

        let io = &sm["metrics"][0];
        assert_eq!(io["name"], "network.flow.io");
        assert_eq!(io["unit"], "By");
        assert_eq!(io["description"], FLOW_IO.description());
        assert_eq!(io["sum"]["aggregationTemporality"], 1);
        assert_eq!(io["sum"]["isMonotonic"], true);
        let dp = &io["sum"]["dataPoints"][0];
        assert_eq!(dp["asInt"], J::String(big.to_string()));
        assert_eq!(dp["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(dp["timeUnixNano"], "1700000010123456789");
        assert_eq!(dp["attributes"][0]["key"], "network.peer.port");
        assert_eq!(dp["attributes"][0]["value"]["intValue"], "443");
        assert_eq!(dp["attributes"][1]["value"]["boolValue"], true);

        // An UpDownCounter: a cumulative, non-monotonic sum.
        let active = &sm["metrics"][1];
        assert_eq!(active["name"], "flowscope.tcp.connection.active");
        assert_eq!(active["sum"]["isMonotonic"], false);
        assert_eq!(active["sum"]["aggregationTemporality"], 2);
        let g = &active["sum"]["dataPoints"][0];
        assert_eq!(g["asDouble"], 1.5);
        assert_eq!(g["startTimeUnixNano"], "1700000000123456789");

        let hp = &sm["metrics"][2]["histogram"]["dataPoints"][0];
        assert_eq!(sm["metrics"][2]["histogram"]["aggregationTemporality"], 1);
        assert_eq!(hp["count"], "2");
        assert_eq!(hp["bucketCounts"], serde_json::json!(["1", "1"]));
        assert_eq!(hp["explicitBounds"], serde_json::json!([0.5]));
        assert_eq!(hp["sum"], 2.25);
        assert_eq!(hp["min"], 0.25);
        assert_eq!(hp["max"], 2.0);

        // And it round-trips through the same mapping, exactly.
        assert_eq!(request_from_json(&line).unwrap(), enc.request);
    }
}
