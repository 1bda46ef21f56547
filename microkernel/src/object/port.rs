//! Ports: event endpoints. A signal on a port bound to a vCPU injects the
//! bound vector into that vCPU and wakes it.
//!
//! # Invariants
//! A port delivers at most one interrupt until it is acknowledged; signals
//! in between are remembered as one pending signal (they coalesce).

use super::ObjectId;

/// An event endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    /// The partition that created it.
    pub owner: ObjectId,
    /// The vCPU and vector signals are delivered to.
    pub binding: Option<(ObjectId, u8)>,
    /// Whether a delivery is allowed now (false between delivery and acknowledge).
    pub armed: bool,
    /// A signal arrived that is not delivered yet.
    pub pending: bool,
    /// Signals received (statistics).
    pub signals: u64,
}

/// What a signal or acknowledge asks the kernel to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Nothing now.
    None,
    /// Raise `vector` on `vcpu`.
    Raise {
        /// The vCPU.
        vcpu: ObjectId,
        /// The vector.
        vector: u8,
    },
}

impl Port {
    /// A new, unbound, armed port.
    pub fn new(owner: ObjectId) -> Self {
        Port {
            owner,
            binding: None,
            armed: true,
            pending: false,
            signals: 0,
        }
    }

    /// Records a signal; returns what to deliver.
    pub fn signal(&mut self) -> Delivery {
        self.signals = self.signals.wrapping_add(1);
        self.pending = true;
        self.try_deliver()
    }

    /// Re-arms after a delivery; a pending signal is delivered at once.
    pub fn acknowledge(&mut self) -> Delivery {
        self.armed = true;
        self.try_deliver()
    }

    /// Binds the port; a pending signal is delivered at once.
    pub fn bind(&mut self, vcpu: ObjectId, vector: u8) -> Delivery {
        self.binding = Some((vcpu, vector));
        self.try_deliver()
    }

    fn try_deliver(&mut self) -> Delivery {
        match self.binding {
            Some((vcpu, vector)) if self.armed && self.pending => {
                self.armed = false;
                self.pending = false;
                Delivery::Raise { vcpu, vector }
            }
            _ => Delivery::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ObjectId = ObjectId {
        index: 1,
        generation: 0,
    };
    const V: ObjectId = ObjectId {
        index: 2,
        generation: 0,
    };

    #[test]
    fn signals_coalesce_until_acknowledged() {
        let mut port = Port::new(P);
        assert_eq!(port.signal(), Delivery::None, "unbound: kept pending");
        assert_eq!(
            port.bind(V, 0x40),
            Delivery::Raise {
                vcpu: V,
                vector: 0x40
            }
        );
        assert_eq!(port.signal(), Delivery::None, "not acknowledged yet");
        assert_eq!(port.signal(), Delivery::None);
        assert_eq!(
            port.acknowledge(),
            Delivery::Raise {
                vcpu: V,
                vector: 0x40
            },
            "one pending delivery"
        );
        assert_eq!(port.acknowledge(), Delivery::None);
        assert_eq!(
            port.signal(),
            Delivery::Raise {
                vcpu: V,
                vector: 0x40
            }
        );
        assert_eq!(port.signals, 4);
    }
}
