//! How the "X/Y/Z plot" script turns an axis's text into values, reproducing AUTOMATIC1111 v1.10.1
//! `scripts/xyz_grid.py` exactly rather than approximately, because users paste the same axis text
//! into both and expect the same grid.
//!
//! - Splitting: `csv_string_to_list_strip` runs Python's `csv.reader` (default dialect,
//!   `skipinitialspace=True`) over every line and strips each field; `list_to_csv_string` is the
//!   reverse (`csv.writer(...).writerow(...)`, then `.strip()`).
//! - Integer axes: `a-b` and `a-b (+step)` are `range(a, b + 1, step)`; `a-b [n]` is `int()` of each
//!   value of `np.linspace(a, b, n)`; anything else goes through Python's `int()`.
//! - Float axes: `a-b (+step)` is `np.arange(a, b + step, step)`; `a-b [n]` is `np.linspace(a, b, n)`;
//!   anything else goes through Python's `float()`.
//! - "Prompt order": every permutation, in `itertools.permutations` order.
//!
//! The four range patterns are Python regular expressions used with `re.fullmatch`. They are matched
//! here by a tiny backtracking matcher that explores alternatives in the same order as Python's
//! engine, so the captured groups are the same, quirks included: the float patterns' unescaped `.`
//! matches any character, so `"1-2-3"` captures `"1-2"` and fails in `float()`, like in A1111.
//!
//! Known deviations, all on inputs that make A1111 raise or that nobody types: `\d`, `int()` and
//! `float()` accept only ASCII digits (Python accepts any Unicode decimal digit); a lone `\r` outside
//! quotes ends a CSV record (Python's reader raises `csv.Error`); integers must fit in `i64`.
//!
//! Every expansion is bounded: the number of values is computed and checked against the caller's
//! limit before anything is allocated for them.

use std::fmt;

/// Why an axis's text could not be turned into values.
#[derive(Debug, Clone, PartialEq)]
pub enum AxisValueError {
    /// The axis would expand to more than `limit` values.
    TooMany { limit: usize },
    /// Python's `int()` / `float()` would raise `ValueError` on this text.
    NotANumber(String),
    /// A valid integer that does not fit in `i64` (Python's integers are unbounded).
    OutOfRange(String),
    /// A range whose step is zero (`range()` and `np.arange` raise).
    ZeroStep(String),
    /// A range whose length numpy cannot compute (a NaN or hugely negative length, a negative count).
    InvalidRange(String),
}

impl fmt::Display for AxisValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany { limit } => write!(f, "the axis expands to more than {limit} values"),
            Self::NotANumber(text) => write!(f, "could not convert '{text}' to a number"),
            Self::OutOfRange(text) => write!(f, "the number '{text}' is out of range"),
            Self::ZeroStep(text) => write!(f, "the range '{text}' has a step of zero"),
            Self::InvalidRange(text) => write!(f, "cannot compute the length of the range '{text}'"),
        }
    }
}

impl std::error::Error for AxisValueError {}

fn too_many(limit: usize) -> AxisValueError {
    AxisValueError::TooMany { limit }
}

fn not_a_number(text: &str) -> AxisValueError {
    AxisValueError::NotANumber(text.to_string())
}

// ---------------------------------------------------------------------------------------------
// Whitespace
// ---------------------------------------------------------------------------------------------

/// Python's `str.isspace()`, which `str.strip()` and the regex class `\s` use: Unicode White_Space
/// plus the ASCII separators U+001C..U+001F, which Python counts and `char::is_whitespace` does not.
/// (`int()` and `float()` skip exactly `char::is_whitespace`: they leave U+001C..U+001F alone.)
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
fn py_strip(text: &str) -> &str {
    text.trim_matches(is_py_space)
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// The states of CPython's `_csv.c` reader that the default dialect can reach (no escape char).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CsvState {
    StartRecord,
    StartField,
    InField,
    InQuotedField,
    QuoteInQuotedField,
    EatCrnl,
}

/// CPython's csv reader state machine, fed one character at a time plus an end-of-line marker
/// (`None`) after each line, as `Reader_iternext` does. Records are not kept apart because
/// `chain.from_iterable` flattens them anyway.
struct CsvReader {
    state: CsvState,
    field: String,
    fields: Vec<String>,
}

impl CsvReader {
    fn new() -> Self {
        Self { state: CsvState::StartRecord, field: String::new(), fields: Vec::new() }
    }

    fn save_field(&mut self) {
        self.fields.push(std::mem::take(&mut self.field));
    }

    /// A line break or the end of a line closes the field and the record.
    fn end_record(&mut self, c: Option<char>) {
        self.save_field();
        self.state = if c.is_none() { CsvState::StartRecord } else { CsvState::EatCrnl };
    }

    fn feed(&mut self, c: Option<char>) {
        match self.state {
            CsvState::StartRecord => self.start_record(c),
            CsvState::StartField => self.start_field(c),
            CsvState::InField => self.in_field(c),
            CsvState::InQuotedField => self.in_quoted_field(c),
            CsvState::QuoteInQuotedField => self.quote_in_quoted_field(c),
            CsvState::EatCrnl => self.eat_crnl(c),
        }
    }

    /// An empty line yields an empty record, which contributes no field at all.
    fn start_record(&mut self, c: Option<char>) {
        match c {
            None => {}
            Some('\n' | '\r') => self.state = CsvState::EatCrnl,
            Some(_) => {
                self.state = CsvState::StartField;
                self.start_field(c);
            }
        }
    }

    /// `skipinitialspace=True` drops plain spaces (only U+0020) before the field, so a quote may
    /// still open it after `, `.
    fn start_field(&mut self, c: Option<char>) {
        match c {
            None | Some('\n' | '\r') => self.end_record(c),
            Some('"') => self.state = CsvState::InQuotedField,
            Some(' ') => {}
            Some(',') => self.save_field(),
            Some(other) => {
                self.field.push(other);
                self.state = CsvState::InField;
            }
        }
    }

    /// Quotes inside an unquoted field are ordinary characters.
    fn in_field(&mut self, c: Option<char>) {
        match c {
            None | Some('\n' | '\r') => self.end_record(c),
            Some(',') => {
                self.save_field();
                self.state = CsvState::StartField;
            }
            Some(other) => self.field.push(other),
        }
    }

    /// A quoted field runs across lines: line breaks are kept and the end of a line is ignored.
    fn in_quoted_field(&mut self, c: Option<char>) {
        match c {
            None => {}
            Some('"') => self.state = CsvState::QuoteInQuotedField,
            Some(other) => self.field.push(other),
        }
    }

    /// `""` is one quote; any other character after the closing quote continues the field unquoted
    /// (the dialect is not strict).
    fn quote_in_quoted_field(&mut self, c: Option<char>) {
        match c {
            Some('"') => {
                self.field.push('"');
                self.state = CsvState::InQuotedField;
            }
            Some(',') => {
                self.save_field();
                self.state = CsvState::StartField;
            }
            None | Some('\n' | '\r') => self.end_record(c),
            Some(other) => {
                self.field.push(other);
                self.state = CsvState::InField;
            }
        }
    }

    /// Python raises `csv.Error` when text follows a lone `\r` on the same line; this starts a new
    /// record instead.
    fn eat_crnl(&mut self, c: Option<char>) {
        match c {
            Some('\n' | '\r') => {}
            None => self.state = CsvState::StartRecord,
            Some(_) => {
                self.state = CsvState::StartField;
                self.start_field(c);
            }
        }
    }

    /// At the end of the input an unterminated quoted field (or a pending field) still counts.
    fn finish(mut self) -> Vec<String> {
        if self.state == CsvState::InQuotedField || !self.field.is_empty() {
            self.save_field();
        }
        self.fields
    }
}

/// `csv_string_to_list_strip`: every field of every CSV record of `text`, stripped. `StringIO`
/// splits lines after each `\n` only, and the reader sees an end-of-line after each line.
pub fn csv_values(text: &str) -> Vec<String> {
    let mut reader = CsvReader::new();
    for c in text.chars() {
        reader.feed(Some(c));
        if c == '\n' {
            reader.feed(None);
        }
    }
    if !text.is_empty() && !text.ends_with('\n') {
        reader.feed(None);
    }
    reader.finish().iter().map(|field| py_strip(field).to_string()).collect()
}

/// `QUOTE_MINIMAL`: a field is quoted only when it holds the delimiter, the quote or a line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// `list_to_csv_string`: one CSV record, then `.strip()`, which removes the `\r\n` terminator and
/// any whitespace at either end. A record of one empty field is written `""` so it reads back.
pub fn csv_join(values: &[String]) -> String {
    if matches!(values, [only] if only.is_empty()) {
        return "\"\"".to_string();
    }
    let record = values.iter().map(|value| csv_field(value)).collect::<Vec<_>>().join(",");
    py_strip(&record).to_string()
}

// ---------------------------------------------------------------------------------------------
// Regular expressions
// ---------------------------------------------------------------------------------------------

/// A one-character test of the range patterns.
#[derive(Debug, Clone, Copy)]
enum CharTest {
    /// `\s`
    Space,
    /// `\d` (ASCII only here)
    Digit,
    /// `[+-]`
    Sign,
    /// `.` without DOTALL: anything but `\n`.
    Any,
    Literal(char),
}

impl CharTest {
    fn matches(self, c: char) -> bool {
        match self {
            Self::Space => is_py_space(c),
            Self::Digit => c.is_ascii_digit(),
            Self::Sign => c == '+' || c == '-',
            Self::Any => c != '\n',
            Self::Literal(expected) => c == expected,
        }
    }
}

/// A backtracking-VM instruction. `Split` tries its first target before its second, which is how
/// greedy quantifiers prefer the longer match, as in Python's engine.
#[derive(Debug, Clone, Copy)]
enum Inst {
    Char(CharTest),
    Split(usize, usize),
    Jump(usize),
    /// Records the current position in a capture slot (group `g` uses slots `2g` and `2g + 1`).
    Save(usize),
    Match,
}

/// Capture slots for the three groups of a range pattern.
const SLOTS: usize = 6;

/// Builds a program by appending pattern pieces in order.
struct Builder {
    insts: Vec<Inst>,
}

impl Builder {
    fn new() -> Self {
        Self { insts: Vec::new() }
    }

    fn next_pc(&self) -> usize {
        self.insts.len()
    }

    fn char(mut self, test: CharTest) -> Self {
        self.insts.push(Inst::Char(test));
        self
    }

    fn literal(self, c: char) -> Self {
        self.char(CharTest::Literal(c))
    }

    /// `x*`, greedy.
    fn star(mut self, test: CharTest) -> Self {
        let top = self.next_pc();
        self.insts.extend([Inst::Split(top + 1, top + 3), Inst::Char(test), Inst::Jump(top)]);
        self
    }

    /// `x+`, greedy.
    fn plus(mut self, test: CharTest) -> Self {
        let top = self.next_pc();
        self.insts.extend([Inst::Char(test), Inst::Split(top, top + 2)]);
        self
    }

    /// `(?:body)?`, greedy: the body is tried first.
    fn optional(mut self, body: impl FnOnce(Self) -> Self) -> Self {
        let split = self.next_pc();
        self.insts.push(Inst::Split(split + 1, split + 1));
        let mut built = body(self);
        let end = built.next_pc();
        if let Some(inst) = built.insts.get_mut(split) {
            *inst = Inst::Split(split + 1, end);
        }
        built
    }

    /// `(body)` as capture group `group`.
    fn group(mut self, group: usize, body: impl FnOnce(Self) -> Self) -> Self {
        self.insts.push(Inst::Save(2 * group));
        let mut built = body(self);
        built.insts.push(Inst::Save(2 * group + 1));
        built
    }

    fn finish(mut self) -> Program {
        self.insts.push(Inst::Match);
        Program { insts: self.insts }
    }
}

/// `[+-]?\s*\d+`
fn signed_integer(b: Builder) -> Builder {
    b.optional(|b| b.char(CharTest::Sign)).star(CharTest::Space).plus(CharTest::Digit)
}

/// `(?:.\d*)?`, the float patterns' fractional part, whose `.` is an unescaped regex dot.
fn loose_fraction(b: Builder) -> Builder {
    b.optional(|b| b.char(CharTest::Any).star(CharTest::Digit))
}

/// `[+-]?\s*\d+(?:.\d*)?`
fn signed_loose_float(b: Builder) -> Builder {
    loose_fraction(signed_integer(b))
}

/// `[+-]\d+`
fn int_step(b: Builder) -> Builder {
    b.char(CharTest::Sign).plus(CharTest::Digit)
}

/// `[+-]\d+(?:.\d*)?`
fn float_step(b: Builder) -> Builder {
    loose_fraction(int_step(b))
}

/// `\d+`
fn int_count(b: Builder) -> Builder {
    b.plus(CharTest::Digit)
}

/// `\d+(?:.\d*)?`
fn float_count(b: Builder) -> Builder {
    loose_fraction(int_count(b))
}

/// The shape shared by the four patterns:
/// `\s*(NUMBER)\s*-\s*(NUMBER)(?:\s*OPEN(EXTRA)\s*CLOSE)?\s*`.
fn range_program(number: fn(Builder) -> Builder, open: char, extra: fn(Builder) -> Builder, close: char) -> Program {
    Builder::new()
        .star(CharTest::Space)
        .group(0, number)
        .star(CharTest::Space)
        .literal('-')
        .star(CharTest::Space)
        .group(1, number)
        .optional(|b| b.star(CharTest::Space).literal(open).group(2, extra).star(CharTest::Space).literal(close))
        .star(CharTest::Space)
        .finish()
}

/// A compiled pattern.
struct Program {
    insts: Vec<Inst>,
}

/// Work items of the matcher: a thread to run, or a capture slot to restore when backtracking past
/// the `Save` that changed it.
enum Job {
    Run { pc: usize, pos: usize },
    Restore { slot: usize, old: Option<usize> },
}

/// One bit per (instruction, position) pair already explored.
struct Visited {
    bits: Vec<u64>,
    width: usize,
}

impl Visited {
    fn new(insts: usize, width: usize) -> Self {
        Self { bits: vec![0; (insts * width).div_ceil(64)], width }
    }

    /// Marks the pair and says whether it was new.
    fn first_visit(&mut self, pc: usize, pos: usize) -> bool {
        let index = pc * self.width + pos;
        match self.bits.get_mut(index / 64) {
            Some(word) => {
                let mask = 1u64 << (index % 64);
                let new = *word & mask == 0;
                *word |= mask;
                new
            }
            None => false,
        }
    }
}

/// The groups of a successful full match.
struct Captures {
    chars: Vec<char>,
    slots: [Option<usize>; SLOTS],
}

impl Captures {
    /// A group's text, or `None` when the group did not take part (like `m.group(n) is None`).
    fn group(&self, group: usize) -> Option<String> {
        let start = (*self.slots.get(2 * group)?)?;
        let end = (*self.slots.get(2 * group + 1)?)?;
        Some(self.chars.get(start..end)?.iter().collect())
    }
}

impl Program {
    /// `re.fullmatch`: the first match in Python's backtracking order that spans the whole text.
    /// Explored (instruction, position) pairs are remembered, so the search stays linear in the
    /// text's length; pruning them cannot change which match comes first, because a pair that was
    /// explored without success fails again whatever the captures (the patterns have no
    /// backreferences and no empty loops).
    fn full_match(&self, text: &str) -> Option<Captures> {
        let chars: Vec<char> = text.chars().collect();
        let slots = self.run(&chars)?;
        Some(Captures { chars, slots })
    }

    fn run(&self, chars: &[char]) -> Option<[Option<usize>; SLOTS]> {
        let mut visited = Visited::new(self.insts.len(), chars.len() + 1);
        let mut slots = [None; SLOTS];
        let mut jobs = vec![Job::Run { pc: 0, pos: 0 }];
        while let Some(job) = jobs.pop() {
            match job {
                Job::Restore { slot, old } => {
                    if let Some(s) = slots.get_mut(slot) {
                        *s = old;
                    }
                }
                Job::Run { pc, pos } => {
                    if self.run_thread(chars, pc, pos, &mut visited, &mut slots, &mut jobs) {
                        return Some(slots);
                    }
                }
            }
        }
        None
    }

    /// Follows one thread until it fails or matches, queueing the alternatives it passes.
    fn run_thread(
        &self,
        chars: &[char],
        mut pc: usize,
        mut pos: usize,
        visited: &mut Visited,
        slots: &mut [Option<usize>; SLOTS],
        jobs: &mut Vec<Job>,
    ) -> bool {
        while visited.first_visit(pc, pos) {
            match self.insts.get(pc) {
                Some(Inst::Char(test)) => match chars.get(pos) {
                    Some(&c) if test.matches(c) => {
                        pc += 1;
                        pos += 1;
                    }
                    _ => return false,
                },
                Some(&Inst::Split(first, second)) => {
                    jobs.push(Job::Run { pc: second, pos });
                    pc = first;
                }
                Some(&Inst::Jump(target)) => pc = target,
                Some(&Inst::Save(slot)) => {
                    if let Some(s) = slots.get_mut(slot) {
                        jobs.push(Job::Restore { slot, old: *s });
                        *s = Some(pos);
                    }
                    pc += 1;
                }
                Some(Inst::Match) => return pos == chars.len(),
                None => return false,
            }
        }
        false
    }
}

/// A pattern pair of one axis type: the step syntax is tried first, then the count syntax.
struct RangePatterns {
    step: Program,
    count: Program,
}

impl RangePatterns {
    /// `re_range` and `re_range_count`.
    fn int() -> Self {
        Self {
            step: range_program(signed_integer, '(', int_step, ')'),
            count: range_program(signed_integer, '[', int_count, ']'),
        }
    }

    /// `re_range_float` and `re_range_count_float`.
    fn float() -> Self {
        Self {
            step: range_program(signed_loose_float, '(', float_step, ')'),
            count: range_program(signed_loose_float, '[', float_count, ']'),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Python's int() and float()
// ---------------------------------------------------------------------------------------------

/// What Python's `int()` makes of a valid literal: Python integers are unbounded, so a literal beyond
/// `i128` is still a number, just not one that fits.
enum PyInt {
    Small(i128),
    Huge,
}

/// PEP 515: an underscore must sit between two digits (checked by Python before stripping).
fn underscores_between_digits(text: &str) -> bool {
    let bytes = text.as_bytes();
    let is_digit_at = |i: Option<usize>| i.and_then(|i| bytes.get(i)).is_some_and(u8::is_ascii_digit);
    bytes.iter().enumerate().all(|(i, &b)| b != b'_' || (is_digit_at(i.checked_sub(1)) && is_digit_at(Some(i + 1))))
}

/// Splits one optional leading sign off.
fn split_sign(text: &str) -> (bool, &str) {
    match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    }
}

/// Python's `int(text)` for a string, in base 10: surrounding whitespace, one optional sign, then
/// digits with single underscores between them; nothing else (no inner spaces, no `.`).
fn py_int(text: &str) -> Result<PyInt, AxisValueError> {
    let (negative, digits) = split_sign(text.trim());
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        && underscores_between_digits(digits);
    if !well_formed {
        return Err(not_a_number(text));
    }
    let magnitude = digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .try_fold(0i128, |acc, b| acc.checked_mul(10)?.checked_add(i128::from(b - b'0')));
    Ok(match magnitude {
        Some(value) if negative => PyInt::Small(-value),
        Some(value) => PyInt::Small(value),
        None => PyInt::Huge,
    })
}

/// `int(text)` as an `i64`.
fn py_int_i64(text: &str) -> Result<i64, AxisValueError> {
    match py_int(text)? {
        PyInt::Small(value) => i64::try_from(value).map_err(|_| AxisValueError::OutOfRange(text.to_string())),
        PyInt::Huge => Err(AxisValueError::OutOfRange(text.to_string())),
    }
}

/// `int(text)` used as a sample count: anything above `limit` is refused before it is used.
fn py_count(text: &str, limit: usize) -> Result<usize, AxisValueError> {
    match py_int(text)? {
        PyInt::Small(value) if value < 0 => Err(AxisValueError::InvalidRange(text.to_string())),
        PyInt::Small(value) => usize::try_from(value).ok().filter(|&n| n <= limit).ok_or(too_many(limit)),
        PyInt::Huge => Err(too_many(limit)),
    }
}

/// Python's `float(text)` for a string: Rust's grammar (digits, `.`, exponent, `inf`, `infinity`,
/// `nan`, any case, one sign) matches Python's once PEP 515 underscores are checked and removed.
fn py_float(text: &str) -> Result<f64, AxisValueError> {
    if !underscores_between_digits(text) {
        return Err(not_a_number(text));
    }
    let cleaned: String = text.chars().filter(|&c| c != '_').collect();
    cleaned.trim().parse::<f64>().map_err(|_| not_a_number(text))
}

/// Python's `int()` of a float: truncation toward zero; NaN and values outside `i64` are refused.
fn truncate_to_i64(value: f64, text: &str) -> Result<i64, AxisValueError> {
    let truncated = value.trunc();
    let min = i64::MIN as f64; // exactly -2^63
    if truncated >= min && truncated < -min {
        Ok(truncated as i64)
    } else {
        Err(AxisValueError::OutOfRange(text.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// numpy and Python ranges
// ---------------------------------------------------------------------------------------------

/// `len(range(start, stop, step))` for a non-zero step.
fn python_range_len(start: i128, stop: i128, step: i128) -> u128 {
    if step > 0 && start < stop {
        (stop - start - 1).unsigned_abs() / step.unsigned_abs() + 1
    } else if step < 0 && start > stop {
        (start - stop - 1).unsigned_abs() / step.unsigned_abs() + 1
    } else {
        0
    }
}

/// numpy's `_calc_length` for `np.arange(start, stop, step)` with Python floats:
/// `ceil((stop - start) / step)`, where a quotient that underflowed to zero counts as one value
/// (zero if negative), a NaN length raises, and a zero step raises `ZeroDivisionError`.
fn arange_len(start: f64, stop: f64, step: f64, text: &str, limit: usize) -> Result<usize, AxisValueError> {
    if step == 0.0 {
        return Err(AxisValueError::ZeroStep(text.to_string()));
    }
    let delta = stop - start;
    let quotient = delta / step;
    if quotient == 0.0 && delta != 0.0 {
        return Ok(usize::from(!quotient.is_sign_negative()));
    }
    let length = quotient.ceil();
    if length.is_nan() || length < i64::MIN as f64 {
        return Err(AxisValueError::InvalidRange(text.to_string()));
    }
    if length <= 0.0 {
        return Ok(0);
    }
    if length > limit as f64 {
        return Err(too_many(limit));
    }
    Ok(length as usize)
}

/// numpy's arange fill for float64: the first value is `start`, the second `start + step`, and the
/// rest `start + i * delta` where `delta` is the difference of those two (not `step` itself).
fn arange(start: f64, step: f64, len: usize) -> Vec<f64> {
    let next = start + step;
    let delta = next - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => next,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// The offset of sample `i` in `np.linspace`, in numpy's order of operations: `i * step`, or
/// `i / div * delta` when the step underflows to zero, or `i * delta` for fewer than two samples.
fn linspace_offset(i: usize, div: usize, delta: f64) -> f64 {
    let i = i as f64;
    if div == 0 {
        return i * delta;
    }
    let div = div as f64;
    let step = delta / div;
    if step == 0.0 { i / div * delta } else { i * step }
}

/// `np.linspace(start, stop, num)` (endpoint included) in float64; the last sample is exactly `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let delta = stop - start;
    let div = num.saturating_sub(1);
    let mut values: Vec<f64> = (0..num).map(|i| linspace_offset(i, div, delta) + start).collect();
    if num > 1
        && let Some(last) = values.last_mut()
    {
        *last = stop;
    }
    values
}

/// Checks that `extra` more values fit under `limit` next to the `current` ones, before anything is
/// allocated for them.
fn room_for(current: usize, extra: u128, limit: usize) -> Result<usize, AxisValueError> {
    let extra = usize::try_from(extra).map_err(|_| too_many(limit))?;
    match current.checked_add(extra) {
        Some(total) if total <= limit => Ok(extra),
        _ => Err(too_many(limit)),
    }
}

/// A value that is converted only after every range has been expanded, as A1111 converts the
/// leftover texts in a final `[opt.type(x) for x in valslist]` (so a bad range is reported first).
enum Pending<'a, T> {
    Ready(T),
    Text(&'a str),
}

// ---------------------------------------------------------------------------------------------
// Integer axes
// ---------------------------------------------------------------------------------------------

/// One integer axis value, parsed.
enum IntSpec<'a> {
    /// `a-b (+s)`: `range(a, b + 1, s)`.
    Range { start: i128, stop: i128, step: i128 },
    /// `a-b [n]`: `int()` of each `np.linspace(a, b, n)` sample.
    Count { start: i64, end: i64, num: usize },
    /// Anything else, for `int()`.
    Plain(&'a str),
}

impl<'a> IntSpec<'a> {
    fn parse(text: &'a str, patterns: &RangePatterns, limit: usize) -> Result<Self, AxisValueError> {
        if let Some(m) = patterns.step.full_match(text) {
            let start = py_int_i64(&m.group(0).unwrap_or_default())?;
            let end = py_int_i64(&m.group(1).unwrap_or_default())?;
            let step = match m.group(2) {
                Some(step) => py_int_i64(&step)?,
                None => 1,
            };
            if step == 0 {
                return Err(AxisValueError::ZeroStep(text.to_string()));
            }
            return Ok(Self::Range { start: start.into(), stop: i128::from(end) + 1, step: step.into() });
        }
        if let Some(m) = patterns.count.full_match(text) {
            let start = py_int_i64(&m.group(0).unwrap_or_default())?;
            let end = py_int_i64(&m.group(1).unwrap_or_default())?;
            let num = match m.group(2) {
                Some(num) => py_count(&num, limit)?,
                None => 1,
            };
            return Ok(Self::Count { start, end, num });
        }
        Ok(Self::Plain(text))
    }

    fn len(&self) -> u128 {
        match *self {
            Self::Range { start, stop, step } => python_range_len(start, stop, step),
            Self::Count { num, .. } => num as u128,
            Self::Plain(_) => 1,
        }
    }

    /// Appends the values; room for them was checked with `len` first.
    fn expand_into(&self, out: &mut Vec<Pending<'a, i64>>, text: &str) -> Result<(), AxisValueError> {
        match *self {
            Self::Range { start, stop, step } => {
                // Every value lies between `start` and `stop`, so the running sum stays in i128.
                let mut value = start;
                for _ in 0..python_range_len(start, stop, step) {
                    out.push(Pending::Ready(
                        i64::try_from(value).map_err(|_| AxisValueError::OutOfRange(text.into()))?,
                    ));
                    value += step;
                }
            }
            Self::Count { start, end, num } => {
                for sample in linspace(start as f64, end as f64, num) {
                    out.push(Pending::Ready(truncate_to_i64(sample, text)?));
                }
            }
            Self::Plain(plain) => out.push(Pending::Text(plain)),
        }
        Ok(())
    }
}

/// The values of an integer axis (`opt.type == int`), at most `max_values` of them. Blank entries
/// are skipped.
pub fn int_values(texts: &[String], max_values: usize) -> Result<Vec<i64>, AxisValueError> {
    let patterns = RangePatterns::int();
    let mut pending = Vec::new();
    for text in texts.iter().filter(|t| !py_strip(t).is_empty()) {
        let spec = IntSpec::parse(text, &patterns, max_values)?;
        pending.reserve(room_for(pending.len(), spec.len(), max_values)?);
        spec.expand_into(&mut pending, text)?;
    }
    pending
        .into_iter()
        .map(|p| match p {
            Pending::Ready(value) => Ok(value),
            Pending::Text(text) => py_int_i64(text),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Float axes
// ---------------------------------------------------------------------------------------------

/// One float axis value, parsed.
enum FloatSpec<'a> {
    /// `a-b (+s)`: `np.arange(a, b + s, s)`, whose length is already known.
    Arange { start: f64, step: f64, len: usize },
    /// `a-b [n]`: `np.linspace(a, b, n)`.
    Linspace { start: f64, stop: f64, num: usize },
    /// Anything else, for `float()`.
    Plain(&'a str),
}

impl<'a> FloatSpec<'a> {
    fn parse(text: &'a str, patterns: &RangePatterns, limit: usize) -> Result<Self, AxisValueError> {
        if let Some(m) = patterns.step.full_match(text) {
            let start = py_float(&m.group(0).unwrap_or_default())?;
            let end = py_float(&m.group(1).unwrap_or_default())?;
            let step = match m.group(2) {
                Some(step) => py_float(&step)?,
                None => 1.0,
            };
            let len = arange_len(start, end + step, step, text, limit)?;
            return Ok(Self::Arange { start, step, len });
        }
        if let Some(m) = patterns.count.full_match(text) {
            let start = py_float(&m.group(0).unwrap_or_default())?;
            let stop = py_float(&m.group(1).unwrap_or_default())?;
            let num = match m.group(2) {
                Some(num) => py_count(&num, limit)?,
                None => 1,
            };
            return Ok(Self::Linspace { start, stop, num });
        }
        Ok(Self::Plain(text))
    }

    fn len(&self) -> u128 {
        match *self {
            Self::Arange { len, .. } => len as u128,
            Self::Linspace { num, .. } => num as u128,
            Self::Plain(_) => 1,
        }
    }

    /// Appends the values; room for them was checked with `len` first.
    fn expand_into(&self, out: &mut Vec<Pending<'a, f64>>) {
        match *self {
            Self::Arange { start, step, len } => out.extend(arange(start, step, len).into_iter().map(Pending::Ready)),
            Self::Linspace { start, stop, num } => {
                out.extend(linspace(start, stop, num).into_iter().map(Pending::Ready))
            }
            Self::Plain(plain) => out.push(Pending::Text(plain)),
        }
    }
}

/// The values of a float axis (`opt.type == float`), at most `max_values` of them. Blank entries are
/// skipped.
pub fn float_values(texts: &[String], max_values: usize) -> Result<Vec<f64>, AxisValueError> {
    let patterns = RangePatterns::float();
    let mut pending = Vec::new();
    for text in texts.iter().filter(|t| !py_strip(t).is_empty()) {
        let spec = FloatSpec::parse(text, &patterns, max_values)?;
        pending.reserve(room_for(pending.len(), spec.len(), max_values)?);
        spec.expand_into(&mut pending);
    }
    pending
        .into_iter()
        .map(|p| match p {
            Pending::Ready(value) => Ok(value),
            Pending::Text(text) => py_float(text),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Permutations
// ---------------------------------------------------------------------------------------------

/// `n!`, or `None` once it passes `limit`.
fn factorial_within(n: usize, limit: usize) -> Option<usize> {
    (1..=n).try_fold(1usize, |acc, k| acc.checked_mul(k)).filter(|&count| count <= limit)
}

/// Steps `indices` to the next permutation in lexicographic order; `false` after the last one.
fn next_permutation(indices: &mut [usize]) -> bool {
    let Some(pivot) = indices.windows(2).rposition(|w| w[0] < w[1]) else {
        return false;
    };
    let Some(successor) = indices.iter().rposition(|&x| x > indices[pivot]) else {
        return false;
    };
    indices.swap(pivot, successor);
    indices[pivot + 1..].reverse();
    true
}

/// `list(itertools.permutations(values))` ("Prompt order"): every order of the values, by position
/// (equal values still give distinct permutations), in lexicographic order of positions. Refused
/// when `n!` exceeds `max_values`; an empty list has exactly one (empty) permutation.
pub fn permutations(values: &[String], max_values: usize) -> Result<Vec<Vec<String>>, AxisValueError> {
    let count = factorial_within(values.len(), max_values).ok_or(too_many(max_values))?;
    let mut indices: Vec<usize> = (0..values.len()).collect();
    let mut orders = Vec::with_capacity(count);
    loop {
        orders.push(indices.iter().filter_map(|&i| values.get(i).cloned()).collect());
        if !next_permutation(&mut indices) {
            return Ok(orders);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn ints(text: &str) -> Result<Vec<i64>, AxisValueError> {
        int_values(&csv_values(text), 1000)
    }

    fn floats(text: &str) -> Result<Vec<f64>, AxisValueError> {
        float_values(&csv_values(text), 1000)
    }

    fn groups(program: &Program, text: &str) -> Option<Vec<Option<String>>> {
        program.full_match(text).map(|m| (0..3).map(|g| m.group(g)).collect())
    }

    fn some(items: &[&str]) -> Option<Vec<Option<String>>> {
        let mut out: Vec<Option<String>> = items.iter().map(|s| Some(s.to_string())).collect();
        out.resize(3, None);
        Some(out)
    }

    #[test]
    fn csv_plain_and_stripped_fields() {
        assert_eq!(csv_values("a, b ,c"), strings(&["a", "b", "c"]));
        assert_eq!(csv_values("1-5, 7"), strings(&["1-5", "7"]));
    }

    #[test]
    fn csv_quoted_fields() {
        assert_eq!(csv_values("\"a,b\",c"), strings(&["a,b", "c"]));
        assert_eq!(csv_values("\"say \"\"hi\"\"\",x"), strings(&["say \"hi\"", "x"]));
        assert_eq!(csv_values("a,   \"b, c\" ,d"), strings(&["a", "b, c", "d"]));
        assert_eq!(csv_values("a\"b\"c"), strings(&["a\"b\"c"]));
        assert_eq!(csv_values("\"a\" b"), strings(&["a b"]));
    }

    #[test]
    fn csv_tab_does_not_count_as_initial_space() {
        // Only U+0020 is skipped before a quote; the tab makes the quote an ordinary character.
        assert_eq!(csv_values("a,\t\"b,c\""), strings(&["a", "\"b", "c\""]));
    }

    #[test]
    fn csv_empty_text_trailing_comma_and_blank_lines() {
        assert!(csv_values("").is_empty());
        assert!(csv_values("\n\n").is_empty());
        assert_eq!(csv_values("a,"), strings(&["a", ""]));
        assert_eq!(csv_values("a\n\nb\n"), strings(&["a", "b"]));
        assert_eq!(csv_values("a\r\nb"), strings(&["a", "b"]));
        assert_eq!(csv_values("  "), strings(&[""]));
        assert_eq!(csv_values(","), strings(&["", ""]));
    }

    #[test]
    fn csv_quoted_field_spans_lines_and_may_stay_open() {
        assert_eq!(csv_values("\"a\nb\",c"), strings(&["a\nb", "c"]));
        assert_eq!(csv_values("x,\"abc"), strings(&["x", "abc"]));
        assert_eq!(csv_values("x,\"abc\n"), strings(&["x", "abc"]));
    }

    #[test]
    fn csv_join_quotes_minimally() {
        assert_eq!(csv_join(&strings(&["a", "b,c", "d\"e", "f g"])), "a,\"b,c\",\"d\"\"e\",f g");
        assert_eq!(csv_join(&strings(&["a\nb"])), "\"a\nb\"");
        assert_eq!(csv_join(&strings(&[" a", "b "])), "a,b");
        assert_eq!(csv_join(&strings(&[""])), "\"\"");
        assert_eq!(csv_join(&strings(&["", ""])), ",");
        assert_eq!(csv_join(&[]), "");
    }

    #[test]
    fn csv_join_round_trips() {
        let values = strings(&["Euler a", "DPM++ 2M, Karras", "say \"x\""]);
        assert_eq!(csv_values(&csv_join(&values)), values);
    }

    #[test]
    fn int_pattern_groups_follow_python() {
        let p = RangePatterns::int();
        assert_eq!(groups(&p.step, "1-5"), some(&["1", "5"]));
        assert_eq!(groups(&p.step, "-1--5"), some(&["-1", "-5"]));
        assert_eq!(groups(&p.step, "10-20 (+5)"), some(&["10", "20", "+5"]));
        assert_eq!(groups(&p.step, "- 5-7"), some(&["- 5", "7"]));
        assert_eq!(groups(&p.step, " 2 - 8 [4] "), None);
        assert_eq!(groups(&p.count, " 2 - 8 [4] "), some(&["2", "8", "4"]));
        assert_eq!(groups(&p.step, "-3"), None);
        assert_eq!(groups(&p.count, "1-10 [4"), None);
    }

    #[test]
    fn float_pattern_dot_matches_anything() {
        let p = RangePatterns::float();
        assert_eq!(groups(&p.step, "1.5-2.5 (+0.5)"), some(&["1.5", "2.5", "+0.5"]));
        assert_eq!(groups(&p.step, "1-2-3"), some(&["1-2", "3"]));
        assert_eq!(groups(&p.step, "1--2"), some(&["1-", "2"]));
        assert_eq!(groups(&p.step, "1e-3"), some(&["1e", "3"]));
        assert_eq!(groups(&p.step, "1.5e-3"), None);
        assert_eq!(groups(&p.step, "5-1 (-1)"), some(&["5", "1 ", "-1"]));
        assert_eq!(groups(&p.step, "1e5-2e5 (+1e4)"), some(&["1e5", "2e5", "+1e4"]));
        assert_eq!(groups(&p.count, "0-1 [3]"), some(&["0", "1 ", "3"]));
        assert_eq!(groups(&p.count, "0-1 [3.0]"), some(&["0", "1 ", "3.0"]));
        assert_eq!(groups(&p.step, "1-2\n3"), None);
    }

    #[test]
    fn int_step_ranges_are_inclusive_only_upwards() {
        assert_eq!(ints("1-5").unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(ints("1-5 (+2)").unwrap(), vec![1, 3, 5]);
        assert_eq!(ints("10-20 (+5)").unwrap(), vec![10, 15, 20]);
        // `range(a, b + 1, step)`: counting down stops before b + 1, and without a step it is empty.
        assert_eq!(ints("5-1 (-2)").unwrap(), vec![5, 3]);
        assert_eq!(ints("-1--5 (-1)").unwrap(), vec![-1, -2, -3]);
        assert_eq!(ints("5-1").unwrap(), Vec::<i64>::new());
        assert_eq!(ints("-1--5").unwrap(), Vec::<i64>::new());
    }

    #[test]
    fn int_count_ranges_truncate_linspace() {
        assert_eq!(ints("1-10 [4]").unwrap(), vec![1, 4, 7, 10]);
        assert_eq!(ints(" 2 - 8 [4] ").unwrap(), vec![2, 4, 6, 8]);
        assert_eq!(ints("0-10 [4]").unwrap(), vec![0, 3, 6, 10]);
        assert_eq!(ints("-10-0 [4]").unwrap(), vec![-10, -6, -3, 0]);
        assert_eq!(ints("3-9 [1]").unwrap(), vec![3]);
        assert_eq!(ints("3-9 [0]").unwrap(), Vec::<i64>::new());
    }

    #[test]
    fn int_plain_values_use_python_int() {
        assert_eq!(int_values(&strings(&[" 3 "]), 10).unwrap(), vec![3]);
        assert_eq!(ints("-3, +4, 007, 1_000").unwrap(), vec![-3, 4, 7, 1000]);
        assert_eq!(int_values(&strings(&["", "  ", "3"]), 10).unwrap(), vec![3]);
        assert_eq!(ints("+ 3"), Err(AxisValueError::NotANumber("+ 3".into())));
        assert_eq!(ints("1.5"), Err(AxisValueError::NotANumber("1.5".into())));
        assert_eq!(ints("1__0"), Err(AxisValueError::NotANumber("1__0".into())));
        assert_eq!(ints("_1"), Err(AxisValueError::NotANumber("_1".into())));
        assert_eq!(ints("99999999999999999999"), Err(AxisValueError::OutOfRange("99999999999999999999".into())));
    }

    #[test]
    fn int_range_errors() {
        assert_eq!(ints("- 5-7"), Err(AxisValueError::NotANumber("- 5".into())));
        assert_eq!(ints("1-5 (+0)"), Err(AxisValueError::ZeroStep("1-5 (+0)".into())));
        // The range error comes first, as A1111 converts leftover texts only after expanding.
        assert_eq!(ints("abc, 1-5 (+0)"), Err(AxisValueError::ZeroStep("1-5 (+0)".into())));
    }

    #[test]
    fn int_bounds_are_checked_before_allocating() {
        let limit = AxisValueError::TooMany { limit: 1000 };
        assert_eq!(int_values(&strings(&["0-1000000000"]), 1000), Err(limit.clone()));
        assert_eq!(int_values(&strings(&["0-9223372036854775807"]), 1000), Err(limit.clone()));
        assert_eq!(int_values(&strings(&["1-10 [1000000000]"]), 1000), Err(limit.clone()));
        assert_eq!(int_values(&strings(&["1-10 [99999999999999999999999999999999999999999]"]), 1000), Err(limit));
        assert_eq!(int_values(&strings(&["1-5", "6-10"]), 9), Err(AxisValueError::TooMany { limit: 9 }));
        assert_eq!(int_values(&strings(&["1-5", "6-10"]), 10).unwrap().len(), 10);
        assert_eq!(int_values(&strings(&["1", "2"]), 1), Err(AxisValueError::TooMany { limit: 1 }));
    }

    #[test]
    fn float_step_ranges_follow_numpy_arange() {
        assert_eq!(floats("1.5-2.5 (+0.5)").unwrap(), vec![1.5, 2.0, 2.5]);
        assert_eq!(floats("1-5").unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(floats("5-1 (-1)").unwrap(), vec![5.0, 4.0, 3.0, 2.0, 1.0]);
        // stop = 0.3 + 0.1 = 0.4 and ceil((0.4 - 0.1) / 0.1) = 4: the end is overshot.
        assert_eq!(floats("0.1-0.3 (+0.1)").unwrap(), vec![0.1, 0.2, 0.30000000000000004, 0.4]);
        assert_eq!(floats("1e5-2e5 (+5e4)").unwrap(), vec![1e5, 1.5e5, 2e5]);
        assert_eq!(floats("2-1").unwrap(), Vec::<f64>::new());
    }

    #[test]
    fn float_count_ranges_follow_numpy_linspace() {
        assert_eq!(floats("0-1 [5]").unwrap(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(floats("0.5-0.5 [3]").unwrap(), vec![0.5, 0.5, 0.5]);
        assert_eq!(floats("1-2 [1]").unwrap(), vec![1.0]);
        assert_eq!(floats("1-2 [0]").unwrap(), Vec::<f64>::new());
        let thirds = floats("0-1 [4]").unwrap();
        assert_eq!(thirds, vec![0.0, 1.0 / 3.0, 2.0 * (1.0 / 3.0), 1.0]);
        assert_eq!(floats("0-1 [3.0]"), Err(AxisValueError::NotANumber("3.0".into())));
    }

    #[test]
    fn float_plain_values_use_python_float() {
        assert_eq!(
            floats("-3, 1.5e-3, .5, 7., 1_0.5, inf").unwrap(),
            vec![-3.0, 1.5e-3, 0.5, 7.0, 10.5, f64::INFINITY]
        );
        assert!(floats("nan").unwrap()[0].is_nan());
        assert_eq!(floats("abc"), Err(AxisValueError::NotANumber("abc".into())));
        assert_eq!(floats("1_"), Err(AxisValueError::NotANumber("1_".into())));
    }

    #[test]
    fn float_pattern_quirks_raise_like_a1111() {
        assert_eq!(floats("1-2-3"), Err(AxisValueError::NotANumber("1-2".into())));
        assert_eq!(floats("-1--2"), Err(AxisValueError::NotANumber("-1-".into())));
        assert_eq!(floats("1e-3"), Err(AxisValueError::NotANumber("1e".into())));
        assert_eq!(floats("+ 1-2"), Err(AxisValueError::NotANumber("+ 1".into())));
        assert_eq!(floats("1-2 (+0)"), Err(AxisValueError::ZeroStep("1-2 (+0)".into())));
        assert_eq!(floats("1-1 (+0.0)"), Err(AxisValueError::ZeroStep("1-1 (+0.0)".into())));
    }

    #[test]
    fn float_degenerate_ranges() {
        // inf - inf is NaN: numpy cannot compute the length.
        assert_eq!(floats("1e999-1e999"), Err(AxisValueError::InvalidRange("1e999-1e999".into())));
        assert_eq!(floats("0-1e999"), Err(AxisValueError::TooMany { limit: 1000 }));
        assert!(floats("1e999-2 [1]").unwrap()[0].is_nan());
    }

    #[test]
    fn float_bounds_are_checked_before_allocating() {
        let limit = AxisValueError::TooMany { limit: 1000 };
        assert_eq!(float_values(&strings(&["0-1000000000"]), 1000), Err(limit.clone()));
        assert_eq!(float_values(&strings(&["0-1 (+0.0000000001)"]), 1000), Err(limit.clone()));
        assert_eq!(float_values(&strings(&["0-1 [1000000000]"]), 1000), Err(limit));
        assert_eq!(float_values(&strings(&["0-1 [3]", "5"]), 3), Err(AxisValueError::TooMany { limit: 3 }));
    }

    #[test]
    fn arange_uses_the_difference_of_the_first_two_values() {
        // start + step rounds, so numpy's delta differs from step and later values follow the delta.
        let start = 1e16;
        let step = 3.0;
        let values = arange(start, step, 3);
        let delta = (start + step) - start;
        assert_ne!(delta, step);
        assert_eq!(values, vec![start, start + step, start + 2.0 * delta]);
    }

    #[test]
    fn arange_length_edge_cases() {
        assert_eq!(arange_len(0.0, 1.0, 1e308 * 10.0, "x", 10), Ok(1));
        assert_eq!(arange_len(0.0, -1.0, 1e308 * 10.0, "x", 10), Ok(0));
        assert_eq!(arange_len(0.0, 0.0, 1.0, "x", 10), Ok(0));
        assert_eq!(arange_len(0.0, -1e300, 1e-300, "x", 10), Err(AxisValueError::InvalidRange("x".into())));
    }

    #[test]
    fn permutations_follow_itertools_order() {
        let orders = permutations(&strings(&["a", "b", "c"]), 10).unwrap();
        let joined: Vec<String> = orders.iter().map(|o| o.concat()).collect();
        assert_eq!(joined, strings(&["abc", "acb", "bac", "bca", "cab", "cba"]));
        let repeated = permutations(&strings(&["x", "x"]), 10).unwrap();
        assert_eq!(repeated, vec![strings(&["x", "x"]), strings(&["x", "x"])]);
        assert_eq!(permutations(&[], 10).unwrap(), vec![Vec::<String>::new()]);
    }

    #[test]
    fn permutations_are_bounded_by_the_factorial() {
        assert_eq!(permutations(&strings(&["a", "b", "c"]), 5), Err(AxisValueError::TooMany { limit: 5 }));
        assert_eq!(permutations(&strings(&["a", "b", "c"]), 6).unwrap().len(), 6);
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        assert_eq!(permutations(&many, 1000), Err(AxisValueError::TooMany { limit: 1000 }));
        assert_eq!(permutations(&[], 0), Err(AxisValueError::TooMany { limit: 0 }));
    }

    #[test]
    fn matching_long_texts_stays_fast() {
        let long = format!("{}x", "1".repeat(20_000));
        assert!(RangePatterns::float().step.full_match(&long).is_none());
        assert_eq!(float_values(std::slice::from_ref(&long), 10), Err(AxisValueError::NotANumber(long)));
    }

    #[test]
    fn errors_display() {
        assert_eq!(AxisValueError::TooMany { limit: 3 }.to_string(), "the axis expands to more than 3 values");
        assert_eq!(AxisValueError::NotANumber("x".into()).to_string(), "could not convert 'x' to a number");
    }
}
