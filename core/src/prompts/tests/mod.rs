//! Tests of the prompts module. Expected values come from the A1111 parity fixtures, from
//! A1111's own Python code run on the listed inputs (files under `data/`, see their `_source`),
//! or are derived by hand where a comment says so.

mod attention;
mod conditioning;
mod extra_networks;
mod fixtures;
mod multicond;
mod schedules;
mod tokenize;
