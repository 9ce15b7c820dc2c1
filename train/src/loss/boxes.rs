//! Differentiable box-overlap losses on centre-size boxes: IoU, GIoU (Rezatofighi et al. 2019)
//! and CIoU (Zheng et al. 2020). Every input is a [P] tensor; corners are derived here.

use anyhow::Result;
use candle_core::Tensor;

/// Boxes as centre x, centre y, width, height (each a [P] tensor, any unit).
pub struct CxCyWh<'a> {
    pub cx: &'a Tensor,
    pub cy: &'a Tensor,
    pub w: &'a Tensor,
    pub h: &'a Tensor,
}

const EPS: f64 = 1e-9;

/// 1 - GIoU per box pair.
pub fn giou_loss(p: &CxCyWh, g: &CxCyWh) -> Result<Tensor> {
    let o = Overlap::new(p, g)?;
    let hull = ((o.hull_w * o.hull_h)? + EPS)?;
    let giou = (&o.iou - ((&hull - &o.union)? / &hull)?)?;
    Ok((giou.neg()? + 1.0)?)
}

/// 1 - CIoU per box pair: 1 - IoU + centre distance^2 / hull diagonal^2 + alpha * v, with
/// alpha = v / (1 - IoU + v) differentiated too (the exact gradient of this value).
pub fn ciou_loss(p: &CxCyWh, g: &CxCyWh) -> Result<Tensor> {
    let o = Overlap::new(p, g)?;
    let diag = ((o.hull_w.sqr()? + o.hull_h.sqr()?)? + EPS)?;
    let dist = ((p.cx - g.cx)?.sqr()? + (p.cy - g.cy)?.sqr()?)?;
    let ratio_p = (p.w / (p.h + EPS)?)?;
    let ratio_g = (g.w / (g.h + EPS)?)?;
    let v = ((atan_positive(&ratio_g)? - atan_positive(&ratio_p)?)?.sqr()? * (4.0 / std::f64::consts::PI.powi(2)))?;
    let alpha = (&v / (((o.iou.neg()? + 1.0)? + &v)? + EPS)?)?;
    Ok((((o.iou.neg()? + 1.0)? + (dist / diag)?)? + (alpha * v)?)?)
}

/// 1 - IoU per box pair.
pub fn iou_loss(p: &CxCyWh, g: &CxCyWh) -> Result<Tensor> {
    Ok((Overlap::new(p, g)?.iou.neg()? + 1.0)?)
}

struct Overlap {
    iou: Tensor,
    union: Tensor,
    hull_w: Tensor,
    hull_h: Tensor,
}

impl Overlap {
    fn new(p: &CxCyWh, g: &CxCyWh) -> Result<Self> {
        let corners = |b: &CxCyWh| -> Result<[Tensor; 4]> {
            let (hw, hh) = ((b.w * 0.5)?, (b.h * 0.5)?);
            Ok([(b.cx - &hw)?, (b.cy - &hh)?, (b.cx + &hw)?, (b.cy + &hh)?])
        };
        let [px0, py0, px1, py1] = corners(p)?;
        let [gx0, gy0, gx1, gy1] = corners(g)?;
        let iw = (px1.minimum(&gx1)? - px0.maximum(&gx0)?)?.relu()?;
        let ih = (py1.minimum(&gy1)? - py0.maximum(&gy0)?)?.relu()?;
        let inter = (iw * ih)?;
        let union = ((((p.w * p.h)? + (g.w * g.h)?)? - &inter)? + EPS)?;
        let iou = (inter / &union)?;
        let hull_w = (px1.maximum(&gx1)? - px0.minimum(&gx0)?)?;
        let hull_h = (py1.maximum(&gy1)? - py0.minimum(&gy0)?)?;
        Ok(Overlap { iou, union, hull_w, hull_h })
    }
}

/// atan for positive inputs from basic differentiable ops (candle has no atan): with
/// z = min(x, 1/x) in (0, 1], atan(x) = p(z) or pi/2 - p(z), p a minimax polynomial
/// (Abramowitz & Stegun 4.4.49, |error| < 1e-5).
pub fn atan_positive(x: &Tensor) -> Result<Tensor> {
    let z = x.minimum(&x.recip()?)?;
    let z2 = z.sqr()?;
    let mut poly = (z2.ones_like()? * 0.0208351)?;
    for c in [-0.0851330, 0.1801410, -0.3302995, 0.9998660] {
        poly = ((poly * &z2)? + c)?;
    }
    let p = (poly * &z)?;
    let above = x.gt(1.0)?.to_dtype(x.dtype())?;
    // above: pi/2 - p; below: p.
    let flip = ((&above * -2.0)? + 1.0)?;
    Ok(((above * std::f64::consts::FRAC_PI_2)? + (flip * p)?)?)
}
