//! Prompt editing `[from:to:when]` and alternation `[a|b]` (docs/a1111-behaviour.md §7.2): A1111's
//! `get_learned_conditioning_prompt_schedules`.
//!
//! A1111 parses with a lark (Earley) grammar. This is a hand-written parser for the same
//! language:
//! * inside a bracket construct, a prompt is a run of plain text (anything but `\ [ ] ( ) : |`,
//!   with `\x` escapes), whitespace and nested constructs; nested parsing is deterministic;
//! * `(p)`, `(p:p)`, `[p]` (emphasis, kept as text), `[p:p:N]`, `[p:N]` (editing, `N` a signed
//!   number with optional whitespace around it), `[p|p|…]` (alternation, options may be empty);
//! * at the top level a bracket or colon that starts no valid construct is literal text, and a
//!   `|` outside an alternation, or a `\` before a newline or the end, makes the whole prompt
//!   unparseable: it is then used verbatim, as A1111 does.
//!
//! Where a top-level bracket can be read both as a construct and as literal text the grammar is
//! ambiguous; lark's pick then depends on Python's hash seed (e.g. `[a:b:3]]` gives either
//! result from run to run). We always take the construct, which is what lark does whenever its
//! answer is stable.

use super::text::is_py_space;

/// How `when` numbers turn into steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleParams {
    /// Total steps of the (first) pass, in denoiser calls (`steps`, ×2 for second-order samplers).
    pub steps: usize,
    /// Steps of the hires pass when computing its schedules (then `when` is offset, §7.2).
    pub hires_steps: Option<usize>,
    /// `use_old_scheduling`: `v < 1` is a fraction, otherwise a step (instead of "has a dot").
    pub use_old_scheduling: bool,
}

impl ScheduleParams {
    pub fn new(steps: usize) -> Self {
        Self { steps, hires_steps: None, use_old_scheduling: false }
    }
}

/// One entry of a prompt schedule: use `text` while the step is `<= end_at_step`.
pub type ScheduleEntry = (usize, String);

/// A1111's `get_learned_conditioning_prompt_schedules(prompts, steps)`.
pub fn get_learned_conditioning_prompt_schedules(prompts: &[String], steps: usize) -> Vec<Vec<ScheduleEntry>> {
    let params = ScheduleParams::new(steps);
    prompts.iter().map(|p| prompt_schedule(p, &params)).collect()
}

/// The schedule of one prompt: `(end_at_step, text)` with strictly increasing steps; the last
/// entry ends at the total step count.
pub fn prompt_schedule(prompt: &str, params: &ScheduleParams) -> Vec<ScheduleEntry> {
    let ctx = StepContext::new(params);
    let Some(nodes) = Parser::new(prompt).parse_document() else {
        return vec![(ctx.steps, prompt.to_string())];
    };
    let mut boundaries = vec![ctx.steps as i64];
    collect_steps(&nodes, &ctx, &mut boundaries);
    boundaries.sort_unstable();
    boundaries.dedup();
    boundaries
        .into_iter()
        .map(|step| {
            let mut text = String::new();
            render_at_step(&nodes, step, &ctx, &mut text);
            // Boundaries are >= 1 or the total step count, so never negative.
            (usize::try_from(step).unwrap_or(0), text)
        })
        .collect()
}

/// Parsed prompt. Emphasis brackets and literal brackets are kept as text.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Scheduled { before: Option<Vec<Node>>, after: Vec<Node>, when: String },
    Alternate(Vec<Vec<Node>>),
}

/// The step arithmetic of `CollectSteps.scheduled`.
struct StepContext {
    steps: usize,
    int_offset: f64,
    float_offset: f64,
    use_old_scheduling: bool,
}

impl StepContext {
    fn new(params: &ScheduleParams) -> Self {
        match params.hires_steps {
            Some(hires) if !params.use_old_scheduling => {
                Self { steps: hires, int_offset: params.steps as f64, float_offset: 1.0, use_old_scheduling: false }
            }
            _ => Self {
                steps: params.steps,
                int_offset: 0.0,
                float_offset: 0.0,
                use_old_scheduling: params.use_old_scheduling,
            },
        }
    }

    /// `min(steps, int(v))` for the number text of a `[..:..:when]`.
    fn when_step(&self, when: &str) -> i64 {
        let v: f64 = when.parse().unwrap_or(0.0);
        let steps = self.steps as f64;
        let v = if self.use_old_scheduling {
            if v < 1.0 { v * steps } else { v }
        } else if when.contains('.') {
            (v - self.float_offset) * steps
        } else {
            v - self.int_offset
        };
        // `as` truncates toward zero like Python's int() and saturates where Python would
        // raise on infinities.
        (v as i64).min(self.steps as i64)
    }
}

fn collect_steps(nodes: &[Node], ctx: &StepContext, out: &mut Vec<i64>) {
    for node in nodes {
        match node {
            Node::Text(_) => {}
            Node::Scheduled { before, after, when } => {
                let step = ctx.when_step(when);
                if step >= 1 {
                    out.push(step);
                }
                if let Some(before) = before {
                    collect_steps(before, ctx, out);
                }
                collect_steps(after, ctx, out);
            }
            Node::Alternate(options) => {
                out.extend(1..=ctx.steps as i64);
                for option in options {
                    collect_steps(option, ctx, out);
                }
            }
        }
    }
}

fn render_at_step(nodes: &[Node], step: i64, ctx: &StepContext, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Scheduled { before, after, when } => {
                if step <= ctx.when_step(when) {
                    if let Some(before) = before {
                        render_at_step(before, step, ctx, out);
                    }
                } else {
                    render_at_step(after, step, ctx, out);
                }
            }
            Node::Alternate(options) => {
                let k = options.len() as i64;
                if k > 0 {
                    let pick = (step - 1).rem_euclid(k) as usize;
                    render_at_step(&options[pick], step, ctx, out);
                }
            }
        }
    }
}

/// Deeper bracket nesting than this is treated as unparseable (A1111 would hit Python's
/// recursion limit on such prompts).
const MAX_NESTING: usize = 256;

struct Parser<'a> {
    src: &'a str,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self { src }
    }

    fn peek(&self, pos: usize) -> Option<char> {
        self.src[pos..].chars().next()
    }

    /// `start: (prompt | /[][():]/)*`; None when the prompt is not in the language.
    fn parse_document(&self) -> Option<Vec<Node>> {
        let mut nodes = Vec::new();
        let mut pos = 0;
        while let Some(c) = self.peek(pos) {
            match c {
                '[' | '(' => match self.parse_construct(pos, 0) {
                    Some((construct, end)) => {
                        push_nodes(&mut nodes, construct);
                        pos = end;
                    }
                    None => {
                        push_text(&mut nodes, &self.src[pos..pos + 1]);
                        pos += 1;
                    }
                },
                ']' | ')' | ':' => {
                    push_text(&mut nodes, &self.src[pos..pos + 1]);
                    pos += 1;
                }
                '|' => return None,
                _ => {
                    let end = self.plain_end(pos)?;
                    push_text(&mut nodes, &self.src[pos..end]);
                    pos = end;
                }
            }
        }
        Some(nodes)
    }

    /// End of a run of plain text/whitespace starting at `pos`; None on a backslash that
    /// escapes nothing (end of text or newline: lark's `\\.` does not match those).
    fn plain_end(&self, pos: usize) -> Option<usize> {
        let mut chars = self.src[pos..].char_indices().peekable();
        while let Some(&(i, c)) = chars.peek() {
            match c {
                '[' | ']' | '(' | ')' | ':' | '|' => return Some(pos + i),
                '\\' => {
                    chars.next();
                    match chars.next() {
                        Some((_, '\n')) | None => return None,
                        Some(_) => {}
                    }
                }
                _ => {
                    chars.next();
                }
            }
        }
        Some(self.src.len())
    }

    /// `prompt` inside a construct: items up to one of `: ] ) |` or the end.
    fn parse_prompt(&self, mut pos: usize, depth: usize) -> Option<(Vec<Node>, usize)> {
        let mut nodes = Vec::new();
        while let Some(c) = self.peek(pos) {
            match c {
                ':' | ']' | ')' | '|' => break,
                '[' | '(' => {
                    let (construct, end) = self.parse_construct(pos, depth + 1)?;
                    push_nodes(&mut nodes, construct);
                    pos = end;
                }
                _ => {
                    let end = self.plain_end(pos)?;
                    push_text(&mut nodes, &self.src[pos..end]);
                    pos = end;
                }
            }
        }
        Some((nodes, pos))
    }

    /// A construct opening at `pos` (`(` or `[`), as nodes, and the position after it.
    fn parse_construct(&self, pos: usize, depth: usize) -> Option<(Vec<Node>, usize)> {
        if depth > MAX_NESTING {
            return None;
        }
        let open = self.peek(pos)?;
        let (first, after_first) = self.parse_prompt(pos + 1, depth)?;
        let next = self.peek(after_first)?;
        if open == '(' {
            return match next {
                ')' => Some((wrap("(", first, ")"), after_first + 1)),
                ':' => {
                    let (second, after_second) = self.parse_prompt(after_first + 1, depth)?;
                    if self.peek(after_second)? != ')' {
                        return None;
                    }
                    let mut nodes = wrap("(", first, ":");
                    push_nodes(&mut nodes, second);
                    push_text(&mut nodes, ")");
                    Some((nodes, after_second + 1))
                }
                _ => None,
            };
        }
        match next {
            ']' => Some((wrap("[", first, "]"), after_first + 1)),
            '|' => {
                let mut options = vec![first];
                let mut at = after_first;
                while self.peek(at) == Some('|') {
                    let (option, end) = self.parse_prompt(at + 1, depth)?;
                    options.push(option);
                    at = end;
                }
                (self.peek(at)? == ']').then_some((vec![Node::Alternate(options)], at + 1))
            }
            ':' => {
                // `[to:when]`
                if let Some((when, end)) = self.number_tail(after_first + 1) {
                    let node = Node::Scheduled { before: None, after: first, when };
                    return Some((vec![node], end));
                }
                // `[from:to:when]`
                let (second, after_second) = self.parse_prompt(after_first + 1, depth)?;
                if self.peek(after_second)? != ':' {
                    return None;
                }
                let (when, end) = self.number_tail(after_second + 1)?;
                let node = Node::Scheduled { before: Some(first), after: second, when };
                Some((vec![node], end))
            }
            _ => None,
        }
    }

    /// `[WHITESPACE] NUMBER [WHITESPACE] "]"` at `pos`: the number text and the end position.
    fn number_tail(&self, pos: usize) -> Option<(String, usize)> {
        let rest = &self.src[pos..];
        let lead = rest.len() - rest.trim_start_matches(is_py_space).len();
        let number_len = signed_number_len(&rest[lead..])?;
        let after_number = &rest[lead + number_len..];
        let trail = after_number.len() - after_number.trim_start_matches(is_py_space).len();
        if !after_number[trail..].starts_with(']') {
            return None;
        }
        Some((rest[lead..lead + number_len].to_string(), pos + lead + number_len + trail + 1))
    }
}

/// Length of lark's `SIGNED_NUMBER` at the start of `s`:
/// `[+-]? (\d+ (\.\d*)? | \.\d+) ([eE][+-]?\d+)?`.
fn signed_number_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_digits = digits(i);
    i += int_digits;
    if b.get(i) == Some(&b'.') {
        let frac_digits = digits(i + 1);
        if int_digits == 0 && frac_digits == 0 {
            return None;
        }
        i += 1 + frac_digits;
    } else if int_digits == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_digits = digits(j);
        if exp_digits > 0 {
            i = j + exp_digits;
        }
    }
    Some(i)
}

fn wrap(open: &str, inner: Vec<Node>, close: &str) -> Vec<Node> {
    let mut nodes = vec![Node::Text(open.to_string())];
    push_nodes(&mut nodes, inner);
    push_text(&mut nodes, close);
    nodes
}

fn push_text(nodes: &mut Vec<Node>, text: &str) {
    if let Some(Node::Text(last)) = nodes.last_mut() {
        last.push_str(text);
    } else {
        nodes.push(Node::Text(text.to_string()));
    }
}

fn push_nodes(nodes: &mut Vec<Node>, more: Vec<Node>) {
    for node in more {
        match node {
            Node::Text(t) => push_text(nodes, &t),
            other => nodes.push(other),
        }
    }
}
