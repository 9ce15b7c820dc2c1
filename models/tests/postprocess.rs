//! Detection post-processing: YOLO decoding on hand-built maps, NMS on hand-built boxes,
//! letterbox geometry (and its agreement with `Preprocess`), class names.

use candle_core::{Device, Tensor};
use csp_models::heads::{
    coco_labels, decode, decode_heads, load_labels, nms, parse_labels, postprocess, postprocess_batch, Candidate,
    Detection, Letterbox, NmsKind, PostprocessConfig, ScoredBox, YoloHead, COCO_CATEGORY_IDS, COCO_CLASSES,
};
use csp_models::network::YoloSpec;
use csp_models::preprocess::Preprocess;

const FAR: f32 = -30.0; // sigmoid(FAR) ~ 1e-13: "nothing here"

fn logit(p: f32) -> f32 {
    (p / (1.0 - p)).ln()
}

/// A [n, anchors * (5 + classes), gh, gw] map of `FAR` logits; `set` writes one value.
struct Map {
    n: usize,
    anchors: usize,
    classes: usize,
    gh: usize,
    gw: usize,
    data: Vec<f32>,
}

impl Map {
    fn new(n: usize, anchors: usize, classes: usize, gh: usize, gw: usize) -> Self {
        Map { n, anchors, classes, gh, gw, data: vec![FAR; n * anchors * (5 + classes) * gh * gw] }
    }
    fn set(&mut self, img: usize, anchor: usize, k: usize, row: usize, col: usize, v: f32) {
        let c = anchor * (5 + self.classes) + k;
        let per_img = self.anchors * (5 + self.classes) * self.gh * self.gw;
        self.data[img * per_img + (c * self.gh + row) * self.gw + col] = v;
    }
    /// One box: raw tx, ty, tw, th logits, objectness and class probabilities.
    #[allow(clippy::too_many_arguments)]
    fn put(&mut self, img: usize, anchor: usize, row: usize, col: usize, t: [f32; 4], obj: f32, cls: &[f32]) {
        for (k, v) in t.into_iter().enumerate() {
            self.set(img, anchor, k, row, col, v);
        }
        self.set(img, anchor, 4, row, col, logit(obj));
        for (k, &p) in cls.iter().enumerate() {
            self.set(img, anchor, 5 + k, row, col, logit(p));
        }
    }
    fn tensor(&self) -> Tensor {
        let shape = (self.n, self.anchors * (5 + self.classes), self.gh, self.gw);
        Tensor::from_vec(self.data.clone(), shape, &Device::Cpu).unwrap()
    }
}

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "{got:?} vs {want:?}");
    }
}

// ---------------------------------------------------------------- decoding

#[test]
fn single_cell_decodes_to_the_hand_computed_box() {
    // 2x2 grid on a 64x64 input: cells are 32 px. Box in row 1, column 0.
    let mut m = Map::new(1, 1, 2, 2, 2);
    // sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75, exp(ln 2) = 2, exp(0) = 1.
    m.put(0, 0, 1, 0, [0.0, 3f32.ln(), 2f32.ln(), 0.0], 0.9, &[0.5, 0.8]);
    let out = decode(&m.tensor(), &[(10.0, 20.0)], 2, 1.0, (64, 64), 0.25).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 1);
    // centre ((0 + 0.5) / 2 * 64, (1 + 0.75) / 2 * 64) = (16, 56); size (2 * 10, 1 * 20) = (20, 20).
    assert_close(&out[0][0].bbox, &[6.0, 46.0, 26.0, 66.0], 1e-4);
    assert_close(&out[0][0].scores, &[0.45, 0.72], 1e-5);
    assert_eq!(out[0][0].best(), Some((1, out[0][0].scores[1])));
}

#[test]
fn scale_x_y_stretches_the_centre_offset() {
    // 4x2 grid (W=4, H=2) on a 128x64 input: cells are 32x32. Box in row 0, column 3.
    let mut m = Map::new(1, 1, 1, 2, 4);
    // x: sigmoid = 0.75 -> 0.75 * 1.2 - 0.1 = 0.8. y: sigmoid ~ 0 -> -0.1 (the centre may leave the cell).
    m.put(0, 0, 0, 3, [3f32.ln(), -40.0, 0.0, 0.0], 0.9, &[0.9]);
    let out = decode(&m.tensor(), &[(8.0, 4.0)], 1, 1.2, (128, 64), 0.5).unwrap();
    let b = out[0][0].bbox;
    let (cx, cy) = ((3.0 + 0.8) / 4.0 * 128.0, -0.1 / 2.0 * 64.0);
    assert_close(&b, &[cx - 4.0, cy - 2.0, cx + 4.0, cy + 2.0], 1e-4);

    // With scale 1 the same logits stay inside the cell.
    let out = decode(&m.tensor(), &[(8.0, 4.0)], 1, 1.0, (128, 64), 0.5).unwrap();
    let cx = (3.0 + 0.75) / 4.0 * 128.0;
    assert_close(&out[0][0].bbox, &[cx - 4.0, -2.0, cx + 4.0, 2.0], 1e-4);
}

#[test]
fn anchors_batch_and_non_square_grids_index_the_right_cells() {
    // Two images, two anchors, 3 rows x 5 columns on a 160x96 input: cells are 32x32.
    let mut m = Map::new(2, 2, 3, 3, 5);
    m.put(0, 0, 2, 4, [0.0, 0.0, 0.0, 0.0], 0.8, &[0.1, 0.1, 0.9]);
    m.put(1, 1, 1, 2, [0.0, 0.0, 0.0, 0.0], 0.6, &[0.9, 0.1, 0.1]);
    let anchors = [(10.0, 12.0), (30.0, 40.0)];
    let out = decode(&m.tensor(), &anchors, 3, 1.0, (160, 96), 0.3).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].len(), out[1].len()), (1, 1));
    // Image 0, anchor 0, row 2, col 4: centre (4.5 * 32, 2.5 * 32) = (144, 80), size 10x12.
    assert_close(&out[0][0].bbox, &[139.0, 74.0, 149.0, 86.0], 1e-4);
    assert_eq!(out[0][0].best().unwrap().0, 2);
    // Image 1, anchor 1, row 1, col 2: centre (80, 48), size 30x40.
    assert_close(&out[1][0].bbox, &[65.0, 28.0, 95.0, 68.0], 1e-4);
    assert_eq!(out[1][0].best().unwrap().0, 0);
    assert!((out[1][0].best().unwrap().1 - 0.54).abs() < 1e-5);
}

#[test]
fn score_threshold_is_on_obj_times_class() {
    let mut m = Map::new(1, 1, 2, 1, 1);
    // obj 0.9 passes a 0.5 threshold, but 0.9 * 0.5 = 0.45 and 0.9 * 0.4 = 0.36 do not.
    m.put(0, 0, 0, 0, [0.0; 4], 0.9, &[0.5, 0.4]);
    assert!(decode(&m.tensor(), &[(1.0, 1.0)], 2, 1.0, (32, 32), 0.5).unwrap()[0].is_empty());
    assert_eq!(decode(&m.tensor(), &[(1.0, 1.0)], 2, 1.0, (32, 32), 0.4).unwrap()[0].len(), 1);
}

#[test]
fn decoding_accepts_half_precision_maps() {
    let mut m = Map::new(1, 1, 1, 1, 1);
    m.put(0, 0, 0, 0, [0.0; 4], 0.75, &[1.0 - 1e-3]);
    let map = m.tensor().to_dtype(candle_core::DType::F16).unwrap();
    let out = decode(&map, &[(16.0, 16.0)], 1, 1.0, (32, 32), 0.25).unwrap();
    assert_close(&out[0][0].bbox, &[8.0, 8.0, 24.0, 24.0], 1e-2);
}

#[test]
fn empty_maps_and_quiet_maps_decode_to_empty_lists() {
    let head = YoloHead::new(vec![(4.0, 4.0)], 1, 1.0).unwrap();
    let empty = Map::new(2, 1, 1, 0, 0);
    assert_eq!(head.decode(&empty.tensor(), (32, 32), 0.25).unwrap(), vec![vec![], vec![]]);
    let quiet = Map::new(3, 1, 1, 4, 4);
    assert_eq!(head.decode(&quiet.tensor(), (32, 32), 0.25).unwrap(), vec![vec![], vec![], vec![]]);
    let none = Map::new(0, 1, 1, 4, 4);
    assert!(head.decode(&none.tensor(), (32, 32), 0.25).unwrap().is_empty());
}

#[test]
fn decoding_rejects_maps_that_do_not_fit_the_head() {
    let m = Map::new(1, 1, 2, 2, 2); // 7 channels
    let anchors = [(1.0, 1.0)];
    assert!(decode(&m.tensor(), &anchors, 3, 1.0, (64, 64), 0.25).is_err());
    assert!(decode(&m.tensor(), &[(1.0, 1.0), (2.0, 2.0)], 2, 1.0, (64, 64), 0.25).is_err());
    let flat = m.tensor().flatten_all().unwrap();
    assert!(decode(&flat, &anchors, 2, 1.0, (64, 64), 0.25).is_err());
    assert!(decode(&m.tensor(), &anchors, 2, 1.0, (0, 64), 0.25).is_err());
    assert!(decode(&m.tensor(), &[], 2, 1.0, (64, 64), 0.25).is_err());
    assert!(decode(&m.tensor(), &[(0.0, 1.0)], 2, 1.0, (64, 64), 0.25).is_err());
    assert!(decode(&m.tensor(), &anchors, 2, f32::NAN, (64, 64), 0.25).is_err());
}

#[test]
fn heads_combine_per_image_and_must_agree_on_the_batch() {
    let mut coarse = Map::new(2, 1, 1, 1, 1);
    coarse.put(1, 0, 0, 0, [0.0; 4], 0.9, &[0.9]);
    let mut fine = Map::new(2, 1, 1, 2, 2);
    fine.put(1, 0, 0, 1, [0.0; 4], 0.9, &[0.9]);
    fine.put(0, 0, 1, 1, [0.0; 4], 0.9, &[0.9]);
    let head = |a: f32| YoloHead::new(vec![(a, a)], 1, 1.0).unwrap();
    let heads = [(coarse.tensor(), head(40.0)), (fine.tensor(), head(10.0))];
    let out = decode_heads(&heads, (64, 64), 0.5).unwrap();
    assert_eq!((out[0].len(), out[1].len()), (1, 2));
    assert_close(&out[1][0].bbox, &[12.0, 12.0, 52.0, 52.0], 1e-4);
    assert_close(&out[1][1].bbox, &[43.0, 11.0, 53.0, 21.0], 1e-4);

    let single = Map::new(1, 1, 1, 2, 2);
    let bad = [(coarse.tensor(), head(40.0)), (single.tensor(), head(10.0))];
    assert!(decode_heads(&bad, (64, 64), 0.5).is_err());
    assert!(decode_heads(&[], (64, 64), 0.5).unwrap().is_empty());
}

#[test]
fn from_spec_takes_the_masked_anchors() {
    let spec = YoloSpec {
        mask: vec![3, 4, 5],
        anchors: (1..=9).map(|i| [i as f32, 10.0 * i as f32]).collect(),
        classes: 80,
        scale_x_y: 1.1,
    };
    let head = YoloHead::from_spec(&spec).unwrap();
    assert_eq!(head.anchors, vec![(4.0, 40.0), (5.0, 50.0), (6.0, 60.0)]);
    assert_eq!((head.classes, head.scale_x_y, head.channels()), (80, 1.1, spec.channels()));
    let broken = YoloSpec { mask: vec![9], ..spec };
    assert!(YoloHead::from_spec(&broken).is_err());
}

#[test]
fn nan_and_infinite_logits_do_not_panic() {
    let mut m = Map::new(1, 2, 2, 2, 2);
    m.data.iter_mut().step_by(3).for_each(|v| *v = f32::NAN);
    m.put(0, 1, 1, 1, [0.0, 0.0, 200.0, 0.0], 0.9, &[0.9, 0.9]); // exp(200) overflows
    m.put(0, 0, 0, 0, [0.0; 4], 0.9, &[f32::NAN, 0.9]);
    m.set(0, 0, 5, 0, 0, f32::NAN);
    let heads = [(m.tensor(), YoloHead::new(vec![(4.0, 4.0), (8.0, 8.0)], 2, 1.0).unwrap())];
    let lb = Letterbox::new((64, 64), (64, 64)).unwrap();
    for class_agnostic in [false, true] {
        let cfg = PostprocessConfig { class_agnostic, score_threshold: 0.1, ..Default::default() };
        let dets = postprocess(&heads, &lb, &cfg).unwrap();
        assert!(dets[0].iter().all(|d| d.score.is_finite() && d.bbox.iter().all(|v| v.is_finite())));
    }
    let all_nan = Map { data: vec![f32::NAN; 2 * 7 * 4], ..Map::new(1, 2, 2, 2, 2) };
    assert!(decode(&all_nan.tensor(), &[(1.0, 1.0), (1.0, 1.0)], 2, 1.0, (8, 8), 0.0).unwrap()[0].is_empty());
}

// ---------------------------------------------------------------- NMS

fn sb(bbox: [f32; 4], score: f32, class_id: usize) -> ScoredBox {
    ScoredBox { bbox, score, class_id }
}

#[test]
fn greedy_nms_suppresses_overlaps_of_the_same_class_only() {
    let boxes = [
        sb([0.0, 0.0, 10.0, 10.0], 0.8, 0),
        sb([1.0, 1.0, 11.0, 11.0], 0.9, 0),  // IoU 81/119 = 0.68 with the first
        sb([1.0, 0.0, 11.0, 10.0], 0.7, 1),  // same place, other class
        sb([20.0, 0.0, 30.0, 10.0], 0.6, 0), // elsewhere
    ];
    let kept = nms(&boxes, NmsKind::Greedy, 0.45, false, 100);
    let scores: Vec<f32> = kept.iter().map(|b| b.score).collect();
    assert_eq!(scores, vec![0.9, 0.7, 0.6]);

    let agnostic = nms(&boxes, NmsKind::Greedy, 0.45, true, 100);
    let scores: Vec<f32> = agnostic.iter().map(|b| b.score).collect();
    assert_eq!(scores, vec![0.9, 0.6]);

    // Overlap must exceed the threshold strictly: IoU exactly 0.5 survives a 0.5 threshold.
    let exact = [sb([0.0, 0.0, 2.0, 1.0], 0.9, 0), sb([0.0, 0.0, 1.0, 1.0], 0.8, 0)]; // IoU 1/2
    assert_eq!(nms(&exact, NmsKind::Greedy, 0.5, false, 10).len(), 2);
    assert_eq!(nms(&exact, NmsKind::Greedy, 0.49, false, 10).len(), 1);
}

#[test]
fn diou_keeps_a_box_whose_centre_is_far_but_not_a_concentric_one() {
    // IoU 70/130 = 0.538; centres 3 apart, enclosing diagonal² 13² + 10² = 269:
    // DIoU = 0.538 - (9/269)^0.6 = 0.538 - 0.130 = 0.408.
    let shifted = [sb([0.0, 0.0, 10.0, 10.0], 0.9, 0), sb([3.0, 0.0, 13.0, 10.0], 0.8, 0)];
    let expect = 70.0 / 130.0 - (9.0f32 / 269.0).powf(0.6);
    assert!((NmsKind::DIOU.overlap(&shifted[0].bbox, &shifted[1].bbox) - expect).abs() < 1e-6);
    assert_eq!(nms(&shifted, NmsKind::Greedy, 0.45, false, 10).len(), 1);
    assert_eq!(nms(&shifted, NmsKind::DIOU, 0.45, false, 10).len(), 2);

    // Same centre: no penalty, DIoU suppresses like IoU (IoU 64/100).
    let nested = [sb([0.0, 0.0, 10.0, 10.0], 0.9, 0), sb([1.0, 1.0, 9.0, 9.0], 0.8, 0)];
    assert_eq!(nms(&nested, NmsKind::DIOU, 0.45, false, 10).len(), 1);
    // A larger beta shrinks the penalty (d²/c² < 1): the shifted pair is suppressed again.
    assert_eq!(nms(&shifted, NmsKind::Diou { beta: 3.0 }, 0.45, false, 10).len(), 1);
}

#[test]
fn max_detections_keeps_the_best_survivors() {
    let boxes: Vec<ScoredBox> =
        (0..6).map(|i| sb([20.0 * i as f32, 0.0, 20.0 * i as f32 + 10.0, 10.0], 0.1 * (i + 1) as f32, i % 2)).collect();
    let kept = nms(&boxes, NmsKind::Greedy, 0.45, false, 3);
    let scores: Vec<f32> = kept.iter().map(|b| b.score).collect();
    assert_close(&scores, &[0.6, 0.5, 0.4], 1e-6);
    assert!(nms(&boxes, NmsKind::Greedy, 0.45, false, 0).is_empty());
    // A suppressed box does not use up a slot.
    let mut crowded = boxes.clone();
    crowded.push(sb([100.0, 0.0, 110.0, 10.0], 0.55, 1)); // a duplicate of the 0.6 box (class 1)
    crowded.push(sb([101.0, 0.0, 111.0, 10.0], 0.58, 1)); // overlaps it by 9/11
    let kept = nms(&crowded, NmsKind::Greedy, 0.45, false, 3);
    let scores: Vec<f32> = kept.iter().map(|b| b.score).collect();
    assert_close(&scores, &[0.6, 0.5, 0.4], 1e-6);
}

#[test]
fn nms_of_nothing_and_of_nan_scores() {
    assert!(nms(&[], NmsKind::Greedy, 0.45, false, 10).is_empty());
    let boxes = [
        sb([0.0, 0.0, 10.0, 10.0], f32::NAN, 0),
        sb([0.0, 0.0, 10.0, 10.0], 0.5, 0),
        sb([f32::NAN, 0.0, 10.0, 10.0], 0.9, 0),
        sb([0.0, 0.0, f32::INFINITY, 10.0], 0.9, 0),
        sb([5.0, 5.0, 5.0, 5.0], 0.4, 0), // empty box: IoU 0 with everything
    ];
    let kept = nms(&boxes, NmsKind::DIOU, 0.45, false, 10);
    let scores: Vec<f32> = kept.iter().map(|b| b.score).collect();
    assert_eq!(scores, vec![0.5, 0.4]);
}

// ---------------------------------------------------------------- config, thresholds, filters

fn cand(bbox: [f32; 4], scores: &[f32]) -> Candidate {
    Candidate { bbox, scores: scores.to_vec() }
}

#[test]
fn class_filter_thresholds_and_labels() {
    let identity = Letterbox::new((100, 100), (100, 100)).unwrap();
    let cands = [cand([0.0, 0.0, 10.0, 10.0], &[0.9, 0.3, 0.0]), cand([50.0, 50.0, 60.0, 60.0], &[0.1, 0.25, 0.6])];
    let cfg = PostprocessConfig::coco();
    let dets = cfg.detections(&cands, &identity).unwrap();
    let got: Vec<(usize, f32)> = dets.iter().map(|d| (d.class_id, d.score)).collect();
    // 0.25 equals the threshold: not a detection. The box carries both of its classes per class.
    assert_eq!(got, vec![(0, 0.9), (2, 0.6), (1, 0.3)]);
    assert_eq!(dets[0].label.as_deref(), Some("person"));
    assert_eq!(dets[1].label.as_deref(), Some("car"));

    let agnostic = PostprocessConfig { class_agnostic: true, ..PostprocessConfig::coco() };
    let got: Vec<usize> = agnostic.detections(&cands, &identity).unwrap().iter().map(|d| d.class_id).collect();
    assert_eq!(got, vec![0, 2]);

    let only_1 = PostprocessConfig { classes: Some(vec![1]), ..Default::default() };
    let dets = only_1.detections(&cands, &identity).unwrap();
    assert_eq!(dets.len(), 1);
    assert_eq!((dets[0].class_id, dets[0].score, dets[0].label.clone()), (1, 0.3, None));
    // Agnostic with a filter picks the best wanted class, not the best overall.
    let only_1_agnostic = PostprocessConfig { class_agnostic: true, ..only_1 };
    let dets = only_1_agnostic.detections(&cands, &identity).unwrap();
    assert_eq!(dets.iter().map(|d| d.class_id).collect::<Vec<_>>(), vec![1]);

    let low = PostprocessConfig { score_threshold: 0.05, labels: vec!["a".into()], ..Default::default() };
    let dets = low.detections(&cands, &identity).unwrap();
    assert_eq!(dets.len(), 5);
    assert_eq!(dets.iter().filter(|d| d.label.is_some()).count(), 2);
}

#[test]
fn invalid_configs_are_errors() {
    let lb = Letterbox::new((10, 10), (10, 10)).unwrap();
    for cfg in [
        PostprocessConfig { score_threshold: f32::NAN, ..Default::default() },
        PostprocessConfig { iou_threshold: f32::INFINITY, ..Default::default() },
        PostprocessConfig { nms: NmsKind::Diou { beta: 0.0 }, ..Default::default() },
    ] {
        assert!(cfg.detections(&[], &lb).is_err());
        assert!(postprocess(&[], &lb, &cfg).is_err());
    }
    let cfg: PostprocessConfig =
        serde_json::from_str(r#"{"iou_threshold": 0.6, "nms": {"kind": "diou", "beta": 0.6}}"#).unwrap();
    assert_eq!((cfg.score_threshold, cfg.iou_threshold, cfg.max_detections, cfg.nms), (0.25, 0.6, 300, NmsKind::DIOU));
}

#[test]
fn postprocess_maps_boxes_back_to_the_original_image() {
    // A 128x64 photo letterboxed into 64x64: scale 0.5, resized 64x32 at (0, 16).
    let lb = Letterbox::new((128, 64), (64, 64)).unwrap();
    assert_eq!((lb.resized, lb.offset), ((64, 32), (0, 16)));
    // 2x2 grid: box centred at (16, 32) of the input, 20x8 -> [6, 28, 26, 36].
    let mut m = Map::new(1, 1, 3, 2, 2);
    m.put(0, 0, 0, 0, [0.0, 40.0, 0.0, 0.0], 0.95, &[0.1, 0.9, 0.1]); // y: sigmoid(40) = 1 -> centre row edge 32
    m.put(0, 0, 0, 1, [0.0, 40.0, 0.0, 0.0], 0.95, &[0.1, 0.8, 0.1]); // far enough right to survive
    m.put(0, 0, 1, 0, [0.0, -40.0, 0.0, 0.0], 0.95, &[0.1, 0.7, 0.1]); // same box as the first: suppressed
    let heads = [(m.tensor(), YoloHead::new(vec![(20.0, 8.0)], 3, 1.0).unwrap())];
    let dets = postprocess(&heads, &lb, &PostprocessConfig::coco()).unwrap();
    assert_eq!(dets.len(), 1);
    let got: Vec<(usize, f32)> = dets[0].iter().map(|d| (d.class_id, d.score)).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(dets[0][0].label.as_deref(), Some("bicycle"));
    // Input [6, 28, 26, 36] -> original ((x - 0) * 2, (y - 16) * 2) = [12, 24, 52, 40].
    assert_close(&dets[0][0].bbox, &[12.0, 24.0, 52.0, 40.0], 1e-3);
    // Second: centre (48, 32) -> [38, 28, 58, 36] -> [76, 24, 116, 40].
    assert_close(&dets[0][1].bbox, &[76.0, 24.0, 116.0, 40.0], 1e-3);

    // Per-image letterboxes: the second image is 64x128 (pillarboxed at (16, 0)).
    let mut two = Map::new(2, 1, 3, 2, 2);
    two.put(0, 0, 0, 0, [0.0, 40.0, 0.0, 0.0], 0.95, &[0.1, 0.9, 0.1]);
    two.put(1, 0, 0, 0, [0.0, 40.0, 0.0, 0.0], 0.95, &[0.1, 0.9, 0.1]);
    let heads = [(two.tensor(), YoloHead::new(vec![(20.0, 8.0)], 3, 1.0).unwrap())];
    let tall = Letterbox::new((64, 128), (64, 64)).unwrap();
    assert_eq!((tall.resized, tall.offset), ((32, 64), (16, 0)));
    let dets = postprocess_batch(&heads, &[lb, tall], &PostprocessConfig::default()).unwrap();
    assert_close(&dets[0][0].bbox, &[12.0, 24.0, 52.0, 40.0], 1e-3);
    // [6, 28, 26, 36] -> ((x - 16) * 2, y * 2), clamped to [0, 64] x [0, 128]: [0, 56, 20, 72].
    assert_close(&dets[1][0].bbox, &[0.0, 56.0, 20.0, 72.0], 1e-3);
    assert!(postprocess_batch(&heads, &[lb], &PostprocessConfig::default()).is_err());
    assert!(postprocess_batch(&heads, &[], &PostprocessConfig::default()).is_err());
    let other_net = Letterbox::new((64, 128), (32, 32)).unwrap();
    assert!(postprocess_batch(&heads, &[lb, other_net], &PostprocessConfig::default()).is_err());
    // No heads: nothing detected, one empty list per image.
    assert_eq!(postprocess_batch(&[], &[lb, tall], &PostprocessConfig::default()).unwrap(), vec![vec![], vec![]]);
    assert!(postprocess(&[], &lb, &PostprocessConfig::default()).unwrap().is_empty());
}

#[test]
fn detections_serialize_as_plain_json() {
    let d = Detection { bbox: [1.0, 2.0, 3.5, 4.0], score: 0.5, class_id: 7, label: Some("truck".into()) };
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(json, r#"{"bbox":[1.0,2.0,3.5,4.0],"score":0.5,"class_id":7,"label":"truck"}"#);
    assert_eq!(serde_json::from_str::<Detection>(&json).unwrap(), d);
    let unlabeled = Detection { label: None, ..d };
    let json = serde_json::to_string(&unlabeled).unwrap();
    assert!(!json.contains("label"));
    assert_eq!(serde_json::from_str::<Detection>(&json).unwrap(), unlabeled);
    assert_eq!((unlabeled.width(), unlabeled.height()), (2.5, 2.0));
}

// ---------------------------------------------------------------- letterbox

const SIZES: [usize; 16] = [1, 2, 3, 7, 31, 64, 99, 127, 320, 333, 416, 512, 608, 1001, 1920, 4097];
const NETS: [(usize, usize); 6] = [(416, 416), (512, 512), (608, 608), (320, 192), (193, 257), (1, 1)];

#[test]
fn letterbox_geometry_fills_one_side_and_centres() {
    for &net in &NETS {
        for &w in &SIZES {
            for &h in &SIZES {
                let lb = Letterbox::new((w, h), net).unwrap();
                let (rw, rh) = lb.resized;
                assert!(rw >= 1 && rh >= 1 && rw <= net.0 && rh <= net.1, "{lb:?}");
                assert!(rw == net.0 || rh == net.1, "{lb:?}");
                assert_eq!(lb.offset, ((net.0 - rw) / 2, (net.1 - rh) / 2));
                // The other side is the rounded aspect-preserving size.
                let scale = (net.0 as f64 / w as f64).min(net.1 as f64 / h as f64);
                let (ew, eh) = (w as f64 * scale, h as f64 * scale);
                assert!((rw as f64 - ew).abs() <= 0.5 + 1e-9 || rw == 1, "{lb:?} {ew}");
                assert!((rh as f64 - eh).abs() <= 0.5 + 1e-9 || rh == 1, "{lb:?} {eh}");
            }
        }
    }
    assert!(Letterbox::new((0, 5), (416, 416)).is_err());
    assert!(Letterbox::new((5, 5), (416, 0)).is_err());
    assert!(Letterbox::stretched((0, 5), (416, 416)).is_err());
}

#[test]
fn letterbox_round_trips_exactly() {
    for &net in &NETS {
        for &w in &SIZES {
            for &h in &SIZES {
                for lb in [Letterbox::new((w, h), net).unwrap(), Letterbox::stretched((w, h), net).unwrap()] {
                    // Image corners land exactly on the resized region's corners and come back exactly.
                    let (ox, oy) = (lb.offset.0 as f32, lb.offset.1 as f32);
                    let far = [ox + lb.resized.0 as f32, oy + lb.resized.1 as f32];
                    assert_eq!(lb.forward([0.0, 0.0]), [ox, oy]);
                    assert_eq!(lb.forward([w as f32, h as f32]), far);
                    assert_eq!(lb.inverse([ox, oy]), [0.0, 0.0]);
                    assert_eq!(lb.inverse(far), [w as f32, h as f32]);
                    // Interior points, including non-integers, to within f32 rounding.
                    for k in 0..=16 {
                        let p = [w as f32 * k as f32 / 16.0, h as f32 * (16 - k) as f32 / 16.0];
                        let back = lb.inverse(lb.forward(p));
                        let tol = 1e-5 * (w.max(h) as f32).max(1.0);
                        assert_close(&back, &p, tol);
                        let q = [ox + lb.resized.0 as f32 * k as f32 / 16.0, oy + lb.resized.1 as f32 * 0.3];
                        assert_close(&lb.forward(lb.inverse(q)), &q, 1e-4);
                    }
                    let b = [0.25 * w as f32, 0.5 * h as f32, 0.75 * w as f32, h as f32];
                    assert_close(&lb.inverse_box(lb.forward_box(b)), &b, 1e-5 * w.max(h) as f32);
                }
            }
        }
    }
}

#[test]
fn letterbox_inverse_clamps_to_the_image() {
    let lb = Letterbox::new((200, 100), (100, 100)).unwrap(); // resized 100x50 at (0, 25)
    assert_eq!(lb.inverse([-5.0, 0.0]), [0.0, 0.0]);
    assert_eq!(lb.inverse([150.0, 99.0]), [200.0, 100.0]);
    assert_eq!(lb.inverse([50.0, 50.0]), [100.0, 50.0]);
    assert_eq!(lb.inverse([f32::NAN, f32::INFINITY]), [0.0, 100.0]);
    assert_eq!(lb.inverse_box([-10.0, 10.0, 120.0, 90.0]), [0.0, 0.0, 200.0, 100.0]);
}

#[test]
#[allow(clippy::needless_range_loop)] // (x, y) index three channel planes at once
fn preprocess_letterbox_pastes_where_the_letterbox_says() {
    let device = Device::Cpu;
    let red = image::Rgb([255u8, 0, 0]);
    for &((w, h), (nw, nh)) in &[((37, 101), (64, 48)), ((100, 3), (33, 32)), ((5, 5), (9, 16)), ((64, 64), (64, 64))] {
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w as u32, h as u32, red));
        let x = Preprocess::DARKNET_DETECTOR.apply(&img, (nh, nw), &device).unwrap();
        assert_eq!(x.dims(), &[3, nh, nw]);
        let v = x.to_vec3::<f32>().unwrap();
        let lb = Letterbox::new((w, h), (nw, nh)).unwrap();
        let inside = |x: usize, y: usize| {
            (lb.offset.0..lb.offset.0 + lb.resized.0).contains(&x)
                && (lb.offset.1..lb.offset.1 + lb.resized.1).contains(&y)
        };
        for y in 0..nh {
            for x in 0..nw {
                let px = [v[0][y][x], v[1][y][x], v[2][y][x]];
                let want = if inside(x, y) { [1.0, 0.0, 0.0] } else { [0.5, 0.5, 0.5] };
                assert_eq!(px, want, "pixel ({x}, {y}) of {w}x{h} in {nw}x{nh}: {lb:?}");
            }
        }
    }
    // The grey is normalised like the pixels.
    let timm_lb = Preprocess { resize: csp_models::preprocess::Resize::Letterbox, ..Preprocess::TIMM };
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(8, 2, red));
    let v = timm_lb.apply(&img, (8, 8), &device).unwrap().to_vec3::<f32>().unwrap();
    assert!((v[1][0][0] - (0.5 - 0.456) / 0.224).abs() < 1e-6);
    assert!(Preprocess::DARKNET_DETECTOR.apply(&img, (0, 8), &device).is_err());
}

// ---------------------------------------------------------------- class names

#[test]
fn coco_names_are_the_80_classes_in_order() {
    assert_eq!(COCO_CLASSES.len(), 80);
    let spot = [(0, "person"), (2, "car"), (15, "cat"), (16, "dog"), (39, "bottle"), (62, "tv"), (79, "toothbrush")];
    for (i, name) in spot {
        assert_eq!(COCO_CLASSES[i], name);
    }
    let unique: std::collections::HashSet<_> = COCO_CLASSES.iter().collect();
    assert_eq!(unique.len(), 80);
    assert_eq!(coco_labels().len(), 80);
    assert!(COCO_CATEGORY_IDS.windows(2).all(|p| p[0] < p[1]));
    assert_eq!((COCO_CATEGORY_IDS[0], COCO_CATEGORY_IDS[11], COCO_CATEGORY_IDS[79]), (1, 13, 90));
}

#[test]
fn labels_files_skip_blank_lines_and_refuse_empty_ones() {
    assert_eq!(parse_labels("cat\r\n\n  dog  \n\nhot dog\n").unwrap(), vec!["cat", "dog", "hot dog"]);
    assert!(parse_labels("").is_err());
    assert!(parse_labels("\n  \n\r\n").is_err());

    let dir = std::env::temp_dir().join(format!("csp-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = dir.join("two.names");
    std::fs::write(&names, "a\nb\n").unwrap();
    assert_eq!(load_labels(&names).unwrap(), vec!["a", "b"]);
    let empty = dir.join("empty.names");
    std::fs::write(&empty, "\n\n").unwrap();
    let err = load_labels(&empty).unwrap_err().to_string();
    assert!(err.contains("empty.names") && err.contains("no names"), "{err}");
    assert!(load_labels(dir.join("missing.names")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
