//! `GET /sdapi/v1/cmd-flags`: A1111's argparse destinations with their defaults (v1.10.1
//! `modules/cmd_args.py` plus the built-in extensions' preload flags), with the values that
//! correspond to this server's real settings filled in.

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// `[dest, default]` rows; path defaults use `${script}`, `${data}`, `${models}` placeholders.
const FLAGS_JSON: &str = include_str!("data/cmd_flags_defaults.json");

fn flag_rows() -> &'static [(String, Value)] {
    static ROWS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    ROWS.get_or_init(|| serde_json::from_str(FLAGS_JSON).expect("bundled flags table is valid JSON"))
}

/// The settings of this server that have an A1111 command-line equivalent.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFlags {
    /// Install directory (`script_path`).
    pub script_dir: String,
    /// `--data-dir`.
    pub data_dir: String,
    /// `--models-dir` (None → `<data_dir>/models`).
    pub models_dir: Option<String>,
    pub ckpt_dir: Option<String>,
    pub vae_dir: Option<String>,
    pub listen: bool,
    pub port: Option<u16>,
    /// `--api-auth "u:p,..."` as given.
    pub api_auth: Option<String>,
    pub api_log: bool,
    pub api_server_stop: bool,
    pub cors_allow_origins: Option<String>,
    pub cors_allow_origins_regex: Option<String>,
    pub no_hashing: bool,
    /// `--use-cpu all` when running on CPU.
    pub use_cpu: Vec<String>,
    /// We compute in float32 everywhere on CPU.
    pub no_half: bool,
}

impl Default for ServerFlags {
    fn default() -> Self {
        Self {
            script_dir: ".".into(),
            data_dir: ".".into(),
            models_dir: None,
            ckpt_dir: None,
            vae_dir: None,
            listen: false,
            port: None,
            api_auth: None,
            api_log: false,
            api_server_stop: false,
            cors_allow_origins: None,
            cors_allow_origins_regex: None,
            no_hashing: false,
            use_cpu: vec![],
            no_half: false,
        }
    }
}

impl ServerFlags {
    fn models_path(&self) -> String {
        self.models_dir.clone().unwrap_or_else(|| format!("{}/models", self.data_dir))
    }

    fn expand(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(
                s.replace("${script}", &self.script_dir)
                    .replace("${data}", &self.data_dir)
                    .replace("${models}", &self.models_path()),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.expand(x)).collect()),
            other => other.clone(),
        }
    }

    /// The FlagsModel body: every dest in parser order. We are always an API-only server
    /// (`api: true`, `nowebui: true`).
    pub fn to_api_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (dest, default) in flag_rows() {
            out.insert(dest.clone(), self.expand(default));
        }
        let mut put = |k: &str, v: Value| {
            out.insert(k.into(), v);
        };
        put("api", Value::Bool(true));
        put("nowebui", Value::Bool(true));
        put("data_dir", Value::from(self.data_dir.clone()));
        put("models_dir", self.models_dir.clone().map(Value::from).unwrap_or(Value::Null));
        put("ckpt_dir", self.ckpt_dir.clone().map(Value::from).unwrap_or(Value::Null));
        put("vae_dir", self.vae_dir.clone().map(Value::from).unwrap_or(Value::Null));
        put("listen", Value::Bool(self.listen));
        put("port", self.port.map(Value::from).unwrap_or(Value::Null));
        put("api_auth", self.api_auth.clone().map(Value::from).unwrap_or(Value::Null));
        put("api_log", Value::Bool(self.api_log));
        put("api_server_stop", Value::Bool(self.api_server_stop));
        put("cors_allow_origins", self.cors_allow_origins.clone().map(Value::from).unwrap_or(Value::Null));
        put("cors_allow_origins_regex", self.cors_allow_origins_regex.clone().map(Value::from).unwrap_or(Value::Null));
        put("no_hashing", Value::Bool(self.no_hashing));
        put("use_cpu", Value::from(self.use_cpu.clone()));
        put("no_half", Value::Bool(self.no_half));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_reflect_settings_and_defaults() {
        let f = ServerFlags {
            data_dir: "/srv/sd".into(),
            port: Some(7861),
            listen: true,
            api_auth: Some("u:p".into()),
            ..Default::default()
        };
        let j = f.to_api_json();
        assert_eq!(j["api"], json!(true));
        assert_eq!(j["nowebui"], json!(true));
        assert_eq!(j["port"], json!(7861));
        assert_eq!(j["listen"], json!(true));
        assert_eq!(j["api_auth"], json!("u:p"));
        // argparse defaults from cmd_args.py
        assert_eq!(j["max_batch_count"], json!(16));
        assert_eq!(j["precision"], json!("autocast"));
        assert_eq!(j["timeout_keep_alive"], json!(30));
        assert_eq!(j["gradio_queue"], json!(true));
        assert_eq!(j["hypernetwork_dir"], json!("/srv/sd/models/hypernetworks"));
        assert_eq!(j["lora_dir"], json!("/srv/sd/models/Lora"));
        assert_eq!(j["gradio_allowed_path"], json!(["/srv/sd"]));
        assert!(j.contains_key("f"));
        assert!(!j.contains_key("help"));
    }
}
