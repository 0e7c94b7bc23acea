//! Mutation fuzzing with fixed budgets (deterministic, run in CI) of the request-side network
//! parsers: safetensors headers, extra-network tags with their arguments, and `styles.csv`.
//! None may panic; every input is an answer or an error.

use std::io::Write;

use sdapi_protocol::fuzz::XorShift;

use super::*;
use crate::styles::StyleDatabase;

#[test]
fn mutated_safetensors_headers_are_answers_or_errors() {
    const BUDGET: usize = 3_000;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/a1111-parity-features/models/Lora/tiny-lora.safetensors");
    let original = std::fs::read(fixture).unwrap();
    let header_len = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let path = std::env::temp_dir().join(format!("sdapi-fuzz-header-{}.safetensors", std::process::id()));
    let mut rng = XorShift(0x0ddb_a11c_afe5_eed5);
    let mut ok = 0;
    for _ in 0..BUDGET {
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(8 + header_len);
            match rng.below(3) {
                0 => bytes[i] = rng.next_u64() as u8,
                1 => bytes[i] = *b"{}[]\",:0-9e".get(rng.below(11)).unwrap_or(&b'x'),
                _ => bytes.truncate(i.max(1)),
            }
            if bytes.len() <= i + 1 {
                break;
            }
        }
        std::fs::File::create(&path).and_then(|mut f| f.write_all(&bytes)).unwrap();
        ok += usize::from(SafetensorsHeader::read(&path).is_ok());
    }
    std::fs::remove_file(&path).ok();
    println!("{BUDGET} mutated headers, {ok} still valid");
}

#[test]
fn random_prompts_with_tags_resolve_or_fail_cleanly() {
    const BUDGET: usize = 20_000;
    let catalog = NetworkCatalog::default();
    let mut rng = XorShift(0x7a95_7a95_7a95_7a95);
    let pieces = [
        "<", ">", ":", "=", "lora", "lyco", "te", "unet", "dyn", "1", "-0.5", "1e308", "nan", " ", "x", "é", "\n", "#",
    ];
    for _ in 0..BUDGET {
        let prompt: String = (0..rng.below(24)).map(|_| *rng.pick(&pieces)).collect();
        let prompts = vec![prompt.clone(), prompt];
        let _ = batch_networks(&prompts, &catalog, 1.0, true, |_| None);
        let _ = check_network_name(&prompts[0]);
    }
}

#[test]
fn random_styles_files_parse_or_fail_cleanly() {
    const BUDGET: usize = 20_000;
    let mut rng = XorShift(0x5717_e5c5_0000_0001);
    let pieces =
        ["name,prompt,negative_prompt\n", "\"", "\"\"", ",", "\n", "\r\n", " ", "{prompt}", "#", "a", "\u{feff}"];
    for _ in 0..BUDGET {
        let text: String = (0..rng.below(20)).map(|_| *rng.pick(&pieces)).collect();
        if let Ok(styles) = crate::styles::parse_styles_text(&text) {
            let db = StyleDatabase { path: None, styles };
            let names: Vec<String> = db.styles.iter().map(|s| s.name.clone()).collect();
            let _ = db.apply_to_prompt("p", &names);
        }
    }
}
