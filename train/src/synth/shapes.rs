//! The shape classes and their rasterisation: each shape is a circle or a polygon around a
//! centre, painted with 2x2 supersampled coverage so edges are anti-aliased.

use super::canvas::Canvas;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeKind {
    Circle,
    Square,
    Triangle,
    Star,
    Hexagon,
    Cross,
}

impl ShapeKind {
    pub const ALL: [ShapeKind; 6] = [
        ShapeKind::Circle,
        ShapeKind::Square,
        ShapeKind::Triangle,
        ShapeKind::Star,
        ShapeKind::Hexagon,
        ShapeKind::Cross,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
            ShapeKind::Star => "star",
            ShapeKind::Hexagon => "hexagon",
            ShapeKind::Cross => "cross",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A shape of circumradius `radius` centred at (`cx`, `cy`), turned by `angle` radians.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub kind: ShapeKind,
    pub cx: f32,
    pub cy: f32,
    pub radius: f32,
    pub angle: f32,
}

/// What painting a shape covered: the tight pixel box `[x0, y0, x1, y1)` of every touched pixel
/// and the covered area in pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Painted {
    pub bbox: [u32; 4],
    pub area: f32,
}

impl Shape {
    /// Polygon corners (None for the circle), in image coordinates.
    fn polygon(&self) -> Option<Vec<[f32; 2]>> {
        use std::f32::consts::{FRAC_PI_2, FRAC_PI_4, TAU};
        // Corners in the shape's own frame as (radius fraction, angle) or (x, y) offsets.
        let polar = |n: usize, start: f32, radii: &[f32]| -> Vec<[f32; 2]> {
            (0..n)
                .map(|k| {
                    let a = start + k as f32 * TAU / n as f32;
                    let r = radii[k % radii.len()];
                    [r * a.cos(), r * a.sin()]
                })
                .collect()
        };
        let local = match self.kind {
            ShapeKind::Circle => return None,
            ShapeKind::Square => polar(4, FRAC_PI_4, &[1.0]),
            ShapeKind::Triangle => polar(3, -FRAC_PI_2, &[1.0]),
            ShapeKind::Hexagon => polar(6, 0.0, &[1.0]),
            ShapeKind::Star => polar(10, -FRAC_PI_2, &[1.0, 0.45]),
            ShapeKind::Cross => {
                let (a, b) = (0.32, 0.95);
                vec![
                    [-a, -b],
                    [a, -b],
                    [a, -a],
                    [b, -a],
                    [b, a],
                    [a, a],
                    [a, b],
                    [-a, b],
                    [-a, a],
                    [-b, a],
                    [-b, -a],
                    [-a, -a],
                ]
            }
        };
        let (sin, cos) = self.angle.sin_cos();
        Some(
            local
                .into_iter()
                .map(|[x, y]| {
                    let (x, y) = (x * self.radius, y * self.radius);
                    [self.cx + x * cos - y * sin, self.cy + x * sin + y * cos]
                })
                .collect(),
        )
    }

    /// The geometric bounding box `[x0, y0, x1, y1]` (before rasterisation).
    pub fn extent(&self) -> [f32; 4] {
        match self.polygon() {
            None => [self.cx - self.radius, self.cy - self.radius, self.cx + self.radius, self.cy + self.radius],
            Some(points) => points.iter().fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |[x0, y0, x1, y1], p| {
                [x0.min(p[0]), y0.min(p[1]), x1.max(p[0]), y1.max(p[1])]
            }),
        }
    }

    /// Blends `color` over the canvas by coverage; None when no pixel was touched.
    pub fn paint(&self, canvas: &mut Canvas, color: [f32; 3]) -> Option<Painted> {
        let polygon = self.polygon();
        let inside = |x: f32, y: f32| match &polygon {
            None => (x - self.cx).powi(2) + (y - self.cy).powi(2) <= self.radius * self.radius,
            Some(points) => point_in_polygon(points, x, y),
        };
        let [ex0, ey0, ex1, ey1] = self.extent();
        let (w, h) = (canvas.width as f32, canvas.height as f32);
        let (px0, py0) = (ex0.floor().clamp(0.0, w) as usize, ey0.floor().clamp(0.0, h) as usize);
        let (px1, py1) = (ex1.ceil().clamp(0.0, w) as usize, ey1.ceil().clamp(0.0, h) as usize);
        let mut bbox = [u32::MAX, u32::MAX, 0, 0];
        let mut area = 0.0;
        for y in py0..py1 {
            for x in px0..px1 {
                let (fx, fy) = (x as f32, y as f32);
                let hits = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
                    .iter()
                    .filter(|(dx, dy)| inside(fx + dx, fy + dy))
                    .count();
                if hits == 0 {
                    continue;
                }
                let alpha = hits as f32 / 4.0;
                canvas.blend(x, y, color, alpha);
                area += alpha;
                bbox = [
                    bbox[0].min(x as u32),
                    bbox[1].min(y as u32),
                    bbox[2].max(x as u32 + 1),
                    bbox[3].max(y as u32 + 1),
                ];
            }
        }
        (area > 0.0).then_some(Painted { bbox, area })
    }
}

/// Even-odd rule (the star and cross are concave but simple, so it is exact).
fn point_in_polygon(points: &[[f32; 2]], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = points.len() - 1;
    for i in 0..points.len() {
        let ([xi, yi], [xj, yj]) = (points[i], points[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_paints_its_area_and_box() {
        let mut canvas = Canvas::filled(40, 40, [0.0; 3]);
        // Axis-aligned square of side 20 (circumradius 10 * sqrt 2) centred at (20, 20).
        let shape = Shape { kind: ShapeKind::Square, cx: 20.0, cy: 20.0, radius: 200f32.sqrt(), angle: 0.0 };
        let painted = shape.paint(&mut canvas, [1.0; 3]).unwrap();
        assert_eq!(painted.bbox, [10, 10, 30, 30]);
        assert!((painted.area - 400.0).abs() < 1.0, "{}", painted.area);
    }

    #[test]
    fn names_round_trip() {
        for kind in ShapeKind::ALL {
            assert_eq!(ShapeKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ShapeKind::from_name("blob"), None);
    }
}
