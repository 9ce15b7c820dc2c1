//! timm's published parameter counts, exactly.

use csp_models::{backbones, flops};

#[test]
fn timm_parameter_counts_are_exact() {
    for (arch, expected) in [("cspresnet50", 21_616_168), ("cspresnext50", 20_569_896), ("cspdarknet53", 27_642_184)] {
        let net = backbones::build(arch, 1000).unwrap();
        let s = flops::summarize(&net, 256, 256).unwrap();
        assert_eq!(s.params, expected, "{arch}");
    }
}
