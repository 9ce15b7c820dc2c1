//! Layers the fast CPU engine runs as one, so their intermediate maps are never written:
//! - a concat whose only reader is a conv on the fused kernel: the conv reads the parts directly;
//! - such a conv whose only reader is a residual add (a shortcut): the add happens in the conv's
//!   epilogue.
//!
//! CSP stages end in exactly these shapes (the partial concat feeding the transition conv, and a
//! residual after every block's last conv). The plan is made per pass, because an output the
//! caller asks for must be written.

use crate::network::{Network, Op};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Runs as usual.
    Run,
    /// A concat read only by the next layer, a fused-kernel conv: not run; the conv reads its parts.
    IntoNextConv,
    /// A fused-kernel conv read only by the next layer, a shortcut: run by the shortcut, which adds
    /// its residual in the conv's epilogue.
    IntoNextShortcut,
}

/// Where a conv's input comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The network input.
    Input,
    Layer(usize),
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The last layer that reads each output, counting the layer that runs a deferred conv.
    pub last_use: Vec<usize>,
}

impl Plan {
    /// The plan for layers `0..keep.len()`: `fast[i]` says layer i is a conv on the fused kernel,
    /// `keep[i]` that the caller wants layer i's output.
    pub fn new(net: &Network, fast: &[bool], keep: &[bool]) -> Plan {
        let n = keep.len();
        let layers = &net.layers[..n];
        let mut readers = vec![Vec::new(); n];
        for (i, layer) in layers.iter().enumerate() {
            if i > 0 && layer.op.reads_previous() {
                readers[i - 1].push(i);
            }
            for r in layer.op.references() {
                readers[r].push(i);
            }
        }
        let only_next_reads = |i: usize| i + 1 < n && !keep[i] && readers[i].iter().all(|&r| r == i + 1);
        let mut steps = vec![Step::Run; n];
        for i in 0..n {
            if !only_next_reads(i) || readers[i].is_empty() {
                continue;
            }
            match (&layers[i].op, &layers[i + 1].op) {
                (Op::Route { groups: 1, .. }, Op::Conv(_)) if fast[i + 1] => steps[i] = Step::IntoNextConv,
                (Op::Conv(_), Op::Shortcut { from, .. }) if fast[i] && *from != i => steps[i] = Step::IntoNextShortcut,
                _ => {}
            }
        }
        let mut plan = Plan { steps, last_use: (0..n).collect() };
        for (i, rs) in readers.iter().enumerate() {
            plan.last_use[i] = rs.iter().fold(i, |m, &r| m.max(r));
        }
        // A conv reads its sources where it runs: one layer later when a shortcut runs it.
        for (c, layer) in layers.iter().enumerate() {
            if !matches!(layer.op, Op::Conv(_)) {
                continue;
            }
            let runs_at = if plan.steps[c] == Step::IntoNextShortcut { c + 1 } else { c };
            for source in plan.conv_sources(net, c) {
                if let Source::Layer(j) = source {
                    plan.last_use[j] = plan.last_use[j].max(runs_at);
                }
            }
        }
        plan
    }

    /// The maps conv `c` reads, to be concatenated along channels: the route's parts when the
    /// concat before it is folded into it, else its previous layer (or the network input).
    pub fn conv_sources(&self, net: &Network, c: usize) -> Vec<Source> {
        if c == 0 {
            return vec![Source::Input];
        }
        match &net.layers[c - 1].op {
            Op::Route { layers, .. } if self.steps[c - 1] == Step::IntoNextConv => {
                layers.iter().map(|&l| Source::Layer(l)).collect()
            }
            _ => vec![Source::Layer(c - 1)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Activation, ConvSpec};
    use crate::network::{Layer, Op};
    use crate::preprocess::Preprocess;

    fn net(ops: Vec<Op>) -> Network {
        let layers = ops.into_iter().map(|op| Layer { op, origin: String::new() }).collect();
        Network {
            arch: "t".into(),
            input_channels: 4,
            input_size: (8, 8),
            num_classes: 0,
            preprocess: Preprocess::TIMM,
            layers,
        }
    }

    fn conv(name: &str) -> Op {
        Op::Conv(ConvSpec::new(name, 4, 4, 1, 1))
    }

    fn shortcut(from: usize) -> Op {
        Op::Shortcut { from, activation: Activation::Linear }
    }

    fn route(layers: Vec<usize>) -> Op {
        Op::Route { layers, groups: 1, group_id: 0 }
    }

    /// A CSP-like tail: two branches, a residual block on one, concat, transition conv.
    fn csp() -> Network {
        net(vec![
            conv("a"),          // 0
            conv("b"),          // 1: reads 0
            conv("c"),          // 2: reads 1, only the shortcut reads it
            shortcut(1),        // 3: 2 + 1
            route(vec![0, 3]),  // 4
            conv("transition"), // 5: reads the concat
            shortcut(5),        // 6: not fusable into 5's input conv (from is the conv itself)
        ])
    }

    #[test]
    fn concat_into_conv_and_conv_into_shortcut() {
        let n = csp();
        let plan = Plan::new(&n, &[true, true, true, false, false, true, false], &[false; 7]);
        use Step::*;
        assert_eq!(plan.steps, vec![Run, Run, IntoNextShortcut, Run, IntoNextConv, Run, Run]);
        assert_eq!(plan.conv_sources(&n, 5), vec![Source::Layer(0), Source::Layer(3)]);
        assert_eq!(plan.conv_sources(&n, 2), vec![Source::Layer(1)]);
        assert_eq!(plan.conv_sources(&n, 0), vec![Source::Input]);
        // Layer 1 feeds conv 2, run at 3, and is the residual there.
        assert_eq!(plan.last_use[1], 3);
        // The concat's parts live until the conv that reads them.
        assert_eq!(plan.last_use[0], 5);
        assert_eq!(plan.last_use[3], 5);
    }

    #[test]
    fn kept_outputs_and_slow_convs_are_not_folded() {
        let n = csp();
        let mut keep = [false; 7];
        keep[2] = true;
        keep[4] = true;
        let plan = Plan::new(&n, &[true; 7], &keep);
        assert!(plan.steps.iter().all(|s| *s == Step::Run));
        let plan = Plan::new(&n, &[false; 7], &[false; 7]);
        assert!(plan.steps.iter().all(|s| *s == Step::Run));
    }

    #[test]
    fn a_map_with_a_second_reader_is_written() {
        // Conv 1's output is read by the shortcut and by the route after it.
        let n = net(vec![conv("a"), conv("b"), shortcut(0), route(vec![1, 2]), conv("t")]);
        let plan = Plan::new(&n, &[true; 5], &[false; 5]);
        assert_eq!(plan.steps[1], Step::Run);
        assert_eq!(plan.steps[3], Step::IntoNextConv);
    }
}
