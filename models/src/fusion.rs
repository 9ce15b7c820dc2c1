//! The one fusion the blocked executor plans (concats need none there: a conv reads a concat's
//! parts where they lie): a conv whose only reader is a residual add (a shortcut) runs with the
//! add, and its activation, in its epilogue, so its own output is never written. CSP blocks end in
//! exactly this shape. The plan is made per pass, because an output the caller asks for must be
//! written.

use crate::network::{Network, Op};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Runs as usual.
    Run,
    /// A conv read only by the next layer, a shortcut: run by the shortcut, which adds its
    /// residual in the conv's epilogue.
    IntoNextShortcut,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The last layer that reads each output, counting the layer that runs a deferred conv.
    pub last_use: Vec<usize>,
}

impl Plan {
    /// The plan for layers `0..keep.len()`, with the fusion where `fuse` (else every layer runs
    /// on its own: the reference path), `keep[i]` that the caller wants layer i's output.
    pub fn new(net: &Network, fuse: bool, keep: &[bool]) -> Plan {
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
        let mut steps = vec![Step::Run; n];
        for i in 0..n.saturating_sub(1) {
            let only_next_reads = !keep[i] && !readers[i].is_empty() && readers[i].iter().all(|&r| r == i + 1);
            if let (true, true, Op::Conv(_), Op::Shortcut { from, .. }) =
                (fuse, only_next_reads, &layers[i].op, &layers[i + 1].op)
            {
                if *from != i {
                    steps[i] = Step::IntoNextShortcut;
                }
            }
        }
        let mut last_use: Vec<usize> =
            readers.iter().enumerate().map(|(i, rs)| rs.iter().fold(i, |m, &r| m.max(r))).collect();
        // A deferred conv reads its input one layer later, where the shortcut runs it.
        for c in 1..n {
            if steps[c] == Step::IntoNextShortcut {
                last_use[c - 1] = last_use[c - 1].max(c + 1);
            }
        }
        Plan { steps, last_use }
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
    fn a_conv_read_only_by_a_shortcut_runs_with_it() {
        let n = csp();
        let plan = Plan::new(&n, true, &[false; 7]);
        use Step::*;
        assert_eq!(plan.steps, vec![Run, Run, IntoNextShortcut, Run, Run, Run, Run]);
        // Layer 1 feeds conv 2, run at 3, and is the residual there.
        assert_eq!(plan.last_use[1], 3);
        // The concat's parts live until the concat.
        assert_eq!(plan.last_use[0], 4);
        assert_eq!(plan.last_use[3], 4);
    }

    #[test]
    fn kept_outputs_and_unfused_plans_run_every_layer() {
        let n = csp();
        let mut keep = [false; 7];
        keep[2] = true;
        let plan = Plan::new(&n, true, &keep);
        assert!(plan.steps.iter().all(|s| *s == Step::Run));
        let plan = Plan::new(&n, false, &[false; 7]);
        assert!(plan.steps.iter().all(|s| *s == Step::Run));
    }

    #[test]
    fn a_map_with_a_second_reader_is_written() {
        // Conv 1's output is read by the shortcut and by the route after it.
        let n = net(vec![conv("a"), conv("b"), shortcut(0), route(vec![1, 2]), conv("t")]);
        let plan = Plan::new(&n, true, &[false; 5]);
        assert_eq!(plan.steps[1], Step::Run);
    }
}
