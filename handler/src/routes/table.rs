//! The one list of API routes, in A1111's order (plus the Lora routes): the router registers it
//! and `/openapi.json` describes it, so the two cannot drift apart.

use axum::routing::{MethodRouter, get, post};

use super::jobs;

use super::{control, extras, generation, listing, networks, unsupported};
use crate::app::AppState;

/// One route: method, path, the request schema it takes (if any) and its handler.
pub struct ApiRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub schema: Option<&'static str>,
    pub handler: fn() -> MethodRouter<AppState>,
}

const fn route(method: &'static str, path: &'static str, handler: fn() -> MethodRouter<AppState>) -> ApiRoute {
    ApiRoute { method, path, schema: None, handler }
}

pub const API_ROUTES: &[ApiRoute] = &[
    ApiRoute {
        schema: Some("StableDiffusionProcessingTxt2Img"),
        ..route("post", "/sdapi/v1/txt2img", || post(generation::txt2img))
    },
    ApiRoute {
        schema: Some("StableDiffusionProcessingImg2Img"),
        ..route("post", "/sdapi/v1/img2img", || post(generation::img2img))
    },
    route("post", "/sdapi/v1/extra-single-image", || post(extras::extra_single_image)),
    route("post", "/sdapi/v1/extra-batch-images", || post(extras::extra_batch_images)),
    route("post", "/sdapi/v1/png-info", || post(listing::png_info)),
    route("get", "/sdapi/v1/progress", || get(control::progress)),
    route("post", "/sdapi/v1/interrogate", || post(unsupported::interrogate)),
    route("post", "/sdapi/v1/interrupt", || post(control::interrupt)),
    route("post", "/sdapi/v1/skip", || post(control::skip)),
    route("get", "/sdapi/v1/options", || get(listing::get_options)),
    route("post", "/sdapi/v1/options", || post(listing::set_options)),
    route("get", "/sdapi/v1/cmd-flags", || get(listing::cmd_flags)),
    route("get", "/sdapi/v1/samplers", || get(listing::samplers)),
    route("get", "/sdapi/v1/schedulers", || get(listing::schedulers)),
    route("get", "/sdapi/v1/upscalers", || get(listing::upscalers)),
    route("get", "/sdapi/v1/latent-upscale-modes", || get(listing::latent_upscale_modes)),
    route("get", "/sdapi/v1/sd-models", || get(listing::sd_models)),
    route("get", "/sdapi/v1/sd-vae", || get(listing::sd_vae)),
    route("get", "/sdapi/v1/hypernetworks", || get(listing::empty_list)),
    route("get", "/sdapi/v1/face-restorers", || get(listing::empty_list)),
    route("get", "/sdapi/v1/realesrgan-models", || get(listing::empty_list)),
    route("get", "/sdapi/v1/prompt-styles", || get(networks::prompt_styles)),
    route("get", "/sdapi/v1/embeddings", || get(networks::embeddings)),
    route("post", "/sdapi/v1/refresh-embeddings", || post(networks::refresh_networks)),
    route("post", "/sdapi/v1/refresh-checkpoints", || post(listing::refresh_checkpoints)),
    route("post", "/sdapi/v1/refresh-vae", || post(listing::refresh_checkpoints)),
    route("post", "/sdapi/v1/create/embedding", || post(unsupported::training)),
    route("post", "/sdapi/v1/create/hypernetwork", || post(unsupported::training)),
    route("post", "/sdapi/v1/train/embedding", || post(unsupported::training)),
    route("post", "/sdapi/v1/train/hypernetwork", || post(unsupported::training)),
    route("get", "/sdapi/v1/memory", || get(listing::memory)),
    route("post", "/sdapi/v1/unload-checkpoint", || post(control::unload_checkpoint)),
    route("post", "/sdapi/v1/reload-checkpoint", || post(control::reload_checkpoint)),
    route("get", "/sdapi/v1/scripts", || get(listing::scripts)),
    route("get", "/sdapi/v1/script-info", || get(listing::script_info)),
    route("get", "/sdapi/v1/extensions", || get(listing::empty_list)),
    route("get", "/sdapi/v1/loras", || get(networks::loras)),
    route("post", "/sdapi/v1/refresh-loras", || post(networks::refresh_networks)),
    // Asynchronous jobs (not A1111's; docs/jobs.md).
    route("get", "/sdapi/v1/jobs", || get(jobs::list_jobs)),
    route("get", "/sdapi/v1/jobs/{id}", || get(jobs::get_job).delete(jobs::cancel_job)),
];
