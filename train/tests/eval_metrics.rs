//! The metrics against values computed by hand on crafted cases.

use csp_models::heads::Detection;
use csp_train::data::BoxLabel;
use csp_train::eval::{box_iou, topk_correct, Accuracy, DetectionEval};

fn gt(class: usize, b: [f32; 4]) -> BoxLabel {
    BoxLabel::from_corners(class, b)
}

fn det(class_id: usize, score: f32, bbox: [f32; 4]) -> Detection {
    Detection { bbox, score, class_id, label: None }
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

const A: [f32; 4] = [0.0, 0.0, 10.0, 10.0];
const B: [f32; 4] = [20.0, 20.0, 40.0, 30.0];
const C: [f32; 4] = [50.0, 5.0, 60.0, 25.0];

#[test]
fn iou_of_known_boxes() {
    close(box_iou(A, A), 1.0);
    close(box_iou(A, [2.0, 0.0, 12.0, 10.0]), 80.0 / 120.0);
    close(box_iou(A, [0.0, 0.0, 10.0, 7.5]), 0.75);
    close(box_iou(A, B), 0.0);
    close(box_iou([0.0; 4], [0.0; 4]), 0.0);
}

#[test]
fn perfect_predictions_score_one() {
    let mut eval = DetectionEval::new(2);
    eval.add_image(&[det(0, 0.9, A), det(1, 0.8, B)], &[gt(0, A), gt(1, B)]).unwrap();
    eval.add_image(&[det(0, 0.7, C)], &[gt(0, C)]).unwrap();
    let s = eval.summarize();
    close(s.ap, 1.0);
    close(s.ap50, 1.0);
    close(s.ap75, 1.0);
    assert_eq!(s.per_class[0].as_ref().unwrap().ground_truth, 2);
}

#[test]
fn shifted_box_passes_only_the_low_thresholds() {
    // IoU 2/3: matched at 0.50, 0.55, 0.60, 0.65; missed from 0.70 on.
    let mut eval = DetectionEval::new(1);
    eval.add_image(&[det(0, 0.9, [2.0, 0.0, 12.0, 10.0])], &[gt(0, A)]).unwrap();
    let s = eval.summarize();
    close(s.ap50, 1.0);
    close(s.ap75, 0.0);
    close(s.ap, 0.4);
    // IoU exactly 0.75 counts at the 0.75 threshold (>=): six thresholds of ten.
    let mut eval = DetectionEval::new(1);
    eval.add_image(&[det(0, 0.9, [0.0, 0.0, 10.0, 7.5])], &[gt(0, A)]).unwrap();
    let s = eval.summarize();
    close(s.ap75, 1.0);
    close(s.ap, 0.6);
}

#[test]
fn missed_box_caps_recall() {
    // Recall stops at 1/2 with precision 1: recall points 0.00..=0.50 (51 of 101) score 1.
    let mut eval = DetectionEval::new(1);
    eval.add_image(&[det(0, 0.9, A)], &[gt(0, A), gt(0, B)]).unwrap();
    let s = eval.summarize();
    close(s.ap, 51.0 / 101.0);
    close(s.ap50, 51.0 / 101.0);
    close(s.ap75, 51.0 / 101.0);
}

#[test]
fn duplicate_boxes_are_false_positives() {
    // Scores: A (TP), duplicate of A (FP), B (TP); 2 GT. Recall .5 .5 1, precision 1 .5 2/3,
    // envelope 1 2/3 2/3: recall points 0..=0.50 read 1, 0.51..=1 read 2/3.
    let mut eval = DetectionEval::new(1);
    eval.add_image(&[det(0, 0.9, A), det(0, 0.8, A), det(0, 0.7, B)], &[gt(0, A), gt(0, B)]).unwrap();
    close(eval.summarize().ap, (51.0 + 50.0 * 2.0 / 3.0) / 101.0);
    // A duplicate after every true positive costs nothing.
    let mut eval = DetectionEval::new(1);
    eval.add_image(&[det(0, 0.9, A), det(0, 0.8, A)], &[gt(0, A)]).unwrap();
    close(eval.summarize().ap, 1.0);
}

#[test]
fn interleaved_false_positive_with_three_boxes() {
    // TP, FP, TP against 3 GT: recall 1/3 1/3 2/3, envelope 1 2/3 2/3: points 0..=0.33 read 1
    // (34), 0.34..=0.66 read 2/3 (33), the rest 0.
    let mut eval = DetectionEval::new(1);
    let preds = [det(0, 0.9, A), det(0, 0.8, [100.0, 100.0, 110.0, 110.0]), det(0, 0.7, B)];
    eval.add_image(&preds, &[gt(0, A), gt(0, B), gt(0, C)]).unwrap();
    close(eval.summarize().ap, 56.0 / 101.0);
}

#[test]
fn predictions_are_ranked_across_images() {
    // A confident false positive on an image without objects, then the true positive:
    // precision 0 then 1/2, envelope 1/2 everywhere.
    let mut eval = DetectionEval::new(1);
    eval.add_image(&[det(0, 0.6, A)], &[gt(0, A)]).unwrap();
    eval.add_image(&[det(0, 0.9, B)], &[]).unwrap();
    close(eval.summarize().ap, 0.5);
}

#[test]
fn matching_prefers_the_best_overlap() {
    // The first prediction overlaps both boxes and takes the one it fits exactly; the second
    // then matches the other exactly. First-come matching would leave IoU 9/11 pairs.
    let a2 = [1.0, 0.0, 11.0, 10.0];
    let mut eval = DetectionEval::new(1);
    eval.add_image(&[det(0, 0.9, a2), det(0, 0.8, A)], &[gt(0, A), gt(0, a2)]).unwrap();
    close(eval.summarize().ap, 1.0);
}

#[test]
fn empty_predictions_and_classes_without_ground_truth() {
    let mut eval = DetectionEval::new(3);
    // Class 0: missed entirely. Class 1: perfect. Class 2: predictions but no ground truth.
    eval.add_image(&[det(1, 0.9, B), det(2, 0.8, C)], &[gt(0, A), gt(1, B)]).unwrap();
    let s = eval.summarize();
    assert!(s.per_class[2].is_none());
    close(s.per_class[0].as_ref().unwrap().ap, 0.0);
    close(s.ap, 0.5);
    close(s.ap50, 0.5);
    let mut nothing = DetectionEval::new(1);
    nothing.add_image(&[], &[gt(0, A)]).unwrap();
    close(nothing.summarize().ap, 0.0);
    assert!(DetectionEval::new(2).summarize().per_class.iter().all(Option::is_none));
}

#[test]
fn max_dets_keeps_the_best_per_image_and_class() {
    let mut eval = DetectionEval::with_max_dets(1, 1);
    eval.add_image(&[det(0, 0.9, B), det(0, 0.5, A)], &[gt(0, A)]).unwrap();
    close(eval.summarize().ap, 0.0);
}

#[test]
fn bad_inputs_are_errors() {
    let mut eval = DetectionEval::new(1);
    assert!(eval.add_image(&[det(1, 0.9, A)], &[]).is_err());
    assert!(eval.add_image(&[], &[gt(3, A)]).is_err());
    assert!(eval.add_image(&[det(0, f32::NAN, A)], &[]).is_err());
    assert!(topk_correct(&[0.0; 5], 2, &[0, 1], 1).is_err());
    assert!(topk_correct(&[0.0; 4], 2, &[0, 2], 1).is_err());
}

#[test]
fn topk_counts_ranks_with_stable_ties() {
    let logits = [
        0.1, 0.9, 0.3, 0.2, // label 1: top-1
        0.5, 0.1, 0.4, 0.3, // label 2: second
        0.2, 0.2, 0.2, 0.2, // label 3: all tied, ranks last
        0.0, 0.1, 0.2, 0.3, // label 0: fourth
    ];
    let labels = [1, 2, 3, 0];
    assert_eq!(topk_correct(&logits, 4, &labels, 1).unwrap(), 1);
    assert_eq!(topk_correct(&logits, 4, &labels, 2).unwrap(), 2);
    assert_eq!(topk_correct(&logits, 4, &labels, 3).unwrap(), 2);
    assert_eq!(topk_correct(&logits, 4, &labels, 4).unwrap(), 4);
    let mut acc = Accuracy::default();
    acc.add(&logits, 4, &labels).unwrap();
    acc.add(&[1.0, 0.0, 0.0, 0.0], 4, &[0]).unwrap();
    assert_eq!((acc.top1, acc.top5, acc.total), (2, 5, 5));
    close(acc.top1(), 0.4);
}
