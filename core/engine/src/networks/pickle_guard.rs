//! A check of PyTorch pickles before candle's reader sees them (docs/reliability.md).
//!
//! candle's `pickle` module never executes code: it builds a tree of plain objects and only
//! understands a fixed set of opcodes. Two things can still hurt the process: a class reference
//! that no tensor file needs (what a code-executing pickle looks like; refused so the error says
//! why), and memo references that copy a large object many times over (a "billion laughs" pickle
//! that is a few KiB on disk and exabytes in memory). This pass walks the opcodes with the same
//! stack discipline as candle, counting objects instead of building them, and refuses a pickle
//! that would build more than [`MAX_OBJECTS`] objects or read past its end.

/// Most objects (counting every copy) a network pickle may build.
pub const MAX_OBJECTS: u64 = 20_000_000;
/// Deepest stack a network pickle may reach.
const MAX_STACK: usize = 1 << 20;

/// Module prefixes of the classes a PyTorch state dict refers to (the rebuild functions, storage
/// classes, OrderedDict, numpy scalars); everything else is refused.
const ALLOWED_MODULES: [&str; 5] = ["torch", "collections", "numpy", "_codecs", "pytorch_lightning"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PickleRefused {
    #[error("the pickle refers to `{0}`, which a tensor file does not need (it could run code when loaded by Python)")]
    ForeignClass(String),
    #[error("the pickle would build more than {MAX_OBJECTS} objects")]
    TooLarge,
    #[error("the pickle is malformed: {0}")]
    Malformed(String),
    #[error("the pickle uses opcode 0x{0:02x}, which this reader does not accept")]
    UnknownOpcode(u8),
}

/// One stack slot: a mark or an object of `n` nodes.
#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Object(u64),
}

struct Scan<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u32, u64>,
    built: u64,
}

impl<'a> Scan<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleRefused> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| PickleRefused::Malformed("an argument runs past the end".into()))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u32_arg(&mut self) -> Result<u32, PickleRefused> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<String, PickleRefused> {
        let rest = &self.data[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| PickleRefused::Malformed("unterminated line".into()))?;
        let text = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.pos += len + 1;
        Ok(text)
    }

    fn push(&mut self, nodes: u64) -> Result<(), PickleRefused> {
        self.built = self.built.saturating_add(nodes);
        if self.built > MAX_OBJECTS || self.stack.len() >= MAX_STACK {
            return Err(PickleRefused::TooLarge);
        }
        self.stack.push(Slot::Object(nodes));
        Ok(())
    }

    fn pop(&mut self) -> Result<u64, PickleRefused> {
        match self.stack.pop() {
            Some(Slot::Object(n)) => Ok(n),
            _ => Err(PickleRefused::Malformed("stack underflow".into())),
        }
    }

    fn pop_n(&mut self, count: usize) -> Result<u64, PickleRefused> {
        (0..count).try_fold(0u64, |sum, _| Ok(sum.saturating_add(self.pop()?)))
    }

    fn pop_to_mark(&mut self) -> Result<u64, PickleRefused> {
        let mut sum = 0u64;
        loop {
            match self.stack.pop() {
                Some(Slot::Mark) => return Ok(sum),
                Some(Slot::Object(n)) => sum = sum.saturating_add(n),
                None => return Err(PickleRefused::Malformed("no mark on the stack".into())),
            }
        }
    }

    fn top(&self) -> Result<u64, PickleRefused> {
        match self.stack.last() {
            Some(Slot::Object(n)) => Ok(*n),
            _ => Err(PickleRefused::Malformed("nothing to memoize".into())),
        }
    }

    fn get(&mut self, key: u32) -> Result<(), PickleRefused> {
        let n = *self.memo.get(&key).ok_or_else(|| PickleRefused::Malformed(format!("memo {key} unset")))?;
        self.push(n)
    }
}

/// Checks one pickle stream (a `data.pkl` of a PyTorch zip archive).
pub fn check_pickle(data: &[u8]) -> Result<(), PickleRefused> {
    let mut s = Scan { data, pos: 0, stack: Vec::new(), memo: Default::default(), built: 0 };
    loop {
        let op = s.take(1)?[0];
        match op {
            0x80 => {
                s.take(1)?;
            }
            b'c' => {
                let module = s.line()?;
                let class = s.line()?;
                let root = module.split('.').next().unwrap_or_default();
                let allowed = ALLOWED_MODULES.contains(&root)
                    || (matches!(module.as_str(), "__builtin__" | "builtins") && class == "set");
                if !allowed {
                    return Err(PickleRefused::ForeignClass(format!("{module}.{class}")));
                }
                s.push(1)?;
            }
            b'q' => {
                let key = s.take(1)?[0] as u32;
                let top = s.top()?;
                s.memo.insert(key, top);
            }
            b'r' => {
                let key = s.u32_arg()?;
                let top = s.top()?;
                s.memo.insert(key, top);
            }
            b'h' => {
                let key = s.take(1)?[0] as u32;
                s.get(key)?;
            }
            b'j' => {
                let key = s.u32_arg()?;
                s.get(key)?;
            }
            b'(' => {
                if s.stack.len() >= MAX_STACK {
                    return Err(PickleRefused::TooLarge);
                }
                s.stack.push(Slot::Mark);
            }
            b')' | b'}' | b']' | b'N' | 0x88 | 0x89 => s.push(1)?,
            b'K' => {
                s.take(1)?;
                s.push(1)?;
            }
            b'M' => {
                s.take(2)?;
                s.push(1)?;
            }
            b'J' => {
                s.take(4)?;
                s.push(1)?;
            }
            b'G' => {
                s.take(8)?;
                s.push(1)?;
            }
            0x8a => {
                let n = s.take(1)?[0] as usize;
                s.take(n)?;
                s.push(1)?;
            }
            b'X' => {
                let len = s.u32_arg()? as usize;
                s.take(len)?;
                s.push(1)?;
            }
            b't' | b'd' => {
                let n = s.pop_to_mark()?;
                s.push(n.saturating_add(1))?;
            }
            0x85..=0x87 => {
                let n = s.pop_n((op - 0x84) as usize)?;
                s.push(n.saturating_add(1))?;
            }
            b'R' | 0x81 | b'b' => {
                let n = s.pop_n(2)?;
                s.push(n.saturating_add(1))?;
            }
            b'Q' => {
                let n = s.pop()?;
                s.push(n.saturating_add(1))?;
            }
            b'a' => {
                let n = s.pop_n(2)?;
                s.push(n)?;
            }
            b's' => {
                let n = s.pop_n(3)?;
                s.push(n)?;
            }
            b'e' | b'u' => {
                let items = s.pop_to_mark()?;
                let container = s.pop()?;
                s.push(items.saturating_add(container))?;
            }
            b'.' => return Ok(()),
            other => return Err(PickleRefused::UnknownOpcode(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_executing_pickle_is_refused() {
        // protocol 2: GLOBAL os.system, MARK, BINUNICODE "id", TUPLE, REDUCE, STOP
        let mut p = vec![0x80, 2];
        p.extend_from_slice(b"cos\nsystem\n(X");
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(b"idtR.");
        assert_eq!(check_pickle(&p), Err(PickleRefused::ForeignClass("os.system".into())));
    }

    #[test]
    fn memo_doubling_is_refused_before_it_allocates() {
        // EMPTY_LIST, then 40 times: PUT 0, MARK, GET 0, GET 0, LIST-as-TUPLE → 2^40 nodes.
        let mut p = vec![0x80, 2, b']'];
        for _ in 0..40 {
            p.extend_from_slice(&[b'q', 0, b'(', b'h', 0, b'h', 0, b't']);
        }
        p.push(b'.');
        assert_eq!(check_pickle(&p), Err(PickleRefused::TooLarge));
    }

    #[test]
    fn lengths_past_the_end_are_malformed() {
        let mut p = vec![0x80, 2, b'X'];
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(check_pickle(&p), Err(PickleRefused::Malformed(_))));
    }

    #[test]
    fn an_ordinary_state_dict_shape_passes() {
        // {"a": torch._utils._rebuild_tensor_v2(...)} in outline: GLOBAL, MARK, ..., TUPLE, REDUCE, SETITEM.
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'X'];
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(b"a");
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x02tR");
        p.extend_from_slice(b"s.");
        assert_eq!(check_pickle(&p), Ok(()));
    }
}

/// Mutation fuzzing with a fixed budget (deterministic, runs in CI): the guard never panics, and
/// pickles it lets through never make candle's reader build more than the guard counted.
#[cfg(test)]
mod fuzz {
    use super::*;
    use sdapi_protocol::fuzz::XorShift;

    /// A state-dict-like pickle: {"a": rebuild(...), "b": [1, 2, (3,)], "c": "text"} with memo use.
    fn seed() -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a'];
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x02\x86q\x01h\x01tR");
        p.extend_from_slice(&[b'X', 1, 0, 0, 0, b'b', b']', b'(', b'K', 1, b'K', 2, b'K', 3, 0x85, b'e']);
        p.extend_from_slice(&[b'X', 1, 0, 0, 0, b'c', b'X', 4, 0, 0, 0]);
        p.extend_from_slice(b"textu.");
        p
    }

    #[test]
    fn mutated_pickles_never_panic_the_guard() {
        const BUDGET: usize = 20_000;
        let mut rng = XorShift(0x5eed_1234_abcd_ef01);
        let base = seed();
        assert_eq!(check_pickle(&base), Ok(()));
        let (mut accepted, mut candle_panics) = (0usize, 0usize);
        for _ in 0..BUDGET {
            let mut p = base.clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(4) {
                    0 if !p.is_empty() => {
                        let i = rng.below(p.len());
                        p[i] = rng.next_u64() as u8;
                    }
                    1 => {
                        let i = rng.below(p.len() + 1);
                        p.insert(i, rng.next_u64() as u8);
                    }
                    2 if !p.is_empty() => {
                        p.truncate(rng.below(p.len()));
                    }
                    _ => {
                        // Repeat a slice (memo and stack abuse).
                        let (a, b) = (rng.below(p.len()), rng.below(p.len()));
                        let (a, b) = (a.min(b), a.max(b));
                        let piece = p[a..b].to_vec();
                        for _ in 0..rng.below(8) {
                            p.splice(b..b, piece.iter().copied());
                        }
                    }
                }
            }
            if check_pickle(&p).is_ok() {
                accepted += 1;
                // What production does next: candle's reader, panics contained.
                let parsed = std::panic::catch_unwind(|| {
                    let mut stack = candle_core::pickle::Stack::empty();
                    let mut reader = std::io::BufReader::new(p.as_slice());
                    stack.read_loop(&mut reader).and_then(|()| stack.finalize()).is_ok()
                });
                candle_panics += usize::from(parsed.is_err());
            }
        }
        println!("{BUDGET} mutated pickles: {accepted} passed the guard, {candle_panics} candle panics (contained)");
        assert!(accepted > 0, "the mutations should not all be refused");
    }
}
