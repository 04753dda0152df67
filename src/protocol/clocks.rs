//! The mesh clock (PROTOCOL-MESH.md §13): `set_clock`, `pause_clock`,
//! `resume_clock`, `get_clock`, each answered `clock_status`.

use serde_json::Value;

use super::wire::{Family, FrameSpec};

pub const MIN_SPEED: i32 = 1;
pub const MAX_SPEED: i32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockFrame {
    /// Clamped to 1..=100; not a number is 1.
    Set {
        speed: i32,
    },
    Pause,
    Resume,
    Get,
}

impl Family for ClockFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("set_clock"),
        FrameSpec::request("pause_clock"),
        FrameSpec::request("resume_clock"),
        FrameSpec::request("get_clock"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            "set_clock" => ClockFrame::Set {
                speed: match v.get("speed").and_then(Value::as_f64) {
                    Some(f) if f.is_finite() => {
                        f.clamp(f64::from(MIN_SPEED), f64::from(MAX_SPEED)) as i32
                    }
                    _ => MIN_SPEED,
                },
            },
            "pause_clock" => ClockFrame::Pause,
            "resume_clock" => ClockFrame::Resume,
            "get_clock" => ClockFrame::Get,
            other => unreachable!("`{other}` is not a clock frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            ClockFrame::Set { .. } => "set_clock",
            ClockFrame::Pause => "pause_clock",
            ClockFrame::Resume => "resume_clock",
            ClockFrame::Get => "get_clock",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_is_clamped_and_defaults_to_one() {
        let speed = |t: &str| match ClockFrame::parse("set_clock", t).unwrap() {
            ClockFrame::Set { speed } => speed,
            other => panic!("{other:?}"),
        };
        for (frame, want) in [
            (r#"{"speed":10}"#, 10),
            (r#"{"speed":0}"#, 1),
            (r#"{"speed":-5}"#, 1),
            (r#"{"speed":1000}"#, 100),
            (r#"{"speed":2.7}"#, 2),
            (r#"{"speed":"fast"}"#, 1),
            (r#"{}"#, 1),
        ] {
            assert_eq!(speed(frame), want, "{frame}");
        }
    }
}
