//! `cost`: what a flow's bytes cost, from its `flowscope.network.locality` and a
//! configured price per GiB (2^30 bytes), reported as `flowscope.flow.cost`
//! in USD next to the flow's other points. Only the configured directions
//! count (egress, `transmit`, by default). docs/costs.md explains the
//! numbers.

use flowscope_model::Flow;
use flowscope_model::names::attr;
use flowscope_otel_config::processors::{CostProcessorConfig, DirectionName};

use crate::locality::value;

/// Bytes in a GiB, the unit cloud providers price transfer in.
pub const GIB: f64 = (1u64 << 30) as f64;

/// The `cost` processor.
#[derive(Clone, Debug)]
pub struct Cost {
    cross_zone: f64,
    cross_region: f64,
    cross_cloud: f64,
    internet: f64,
    transmit: bool,
    receive: bool,
}

impl Cost {
    pub fn from_config(c: &CostProcessorConfig) -> Self {
        Cost {
            cross_zone: c.prices.cross_zone,
            cross_region: c.prices.cross_region,
            cross_cloud: c.prices.cross_cloud,
            internet: c.prices.internet,
            transmit: c.directions.contains(&DirectionName::Transmit),
            receive: c.directions.contains(&DirectionName::Receive),
        }
    }

    /// USD per GiB for a locality value; 0 for unpriced ones.
    pub fn price(&self, locality: &str) -> f64 {
        match locality {
            value::CROSS_ZONE => self.cross_zone,
            value::CROSS_REGION => self.cross_region,
            value::CROSS_CLOUD => self.cross_cloud,
            value::INTERNET => self.internet,
            _ => 0.0,
        }
    }

    /// The cost of one flow's bytes in this interval, in USD.
    pub fn of(&self, flow: &Flow) -> f64 {
        let Some(locality) = flow.attrs.get_str(attr::LOCALITY) else {
            return 0.0;
        };
        let price = self.price(locality);
        if price == 0.0 {
            return 0.0;
        }
        let mut bytes = 0u64;
        if self.transmit {
            bytes += flow.stats.bytes_tx;
        }
        if self.receive {
            bytes += flow.stats.bytes_rx;
        }
        bytes as f64 / GIB * price
    }
}
