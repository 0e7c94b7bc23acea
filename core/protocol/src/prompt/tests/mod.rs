//! Tests of the prompt syntax. Expected values come from A1111's own Python code run on the listed
//! inputs (files under `data/`, see their `_source`), or are derived by hand where a comment says so.

mod attention;
mod extra_networks;
mod multicond;
mod schedules;
