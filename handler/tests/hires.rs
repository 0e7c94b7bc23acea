//! The hires fix's request handling: bad values get A1111's errors before anything runs, and a
//! valid request reaches the runner as one job per batch carrying its second pass.

mod common;
use common::*;
use sdapi_core::runner::HiresUpscale;
use sdapi_protocol::choices::LatentUpscaleMode;
use serde_json::json;

fn hires(extra: serde_json::Value) -> String {
    let mut body = json!({"prompt": "x", "steps": 3, "width": 64, "height": 64, "enable_hr": true,
                          "denoising_strength": 0.5});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body.to_string()
}

#[tokio::test]
async fn bad_hires_values_get_a1111_errors_before_any_work() {
    let (app, runner) = app_with(test_config());
    let cases = [
        (json!({"hr_upscaler": "Bogus"}), 500, "Exception", "could not find upscaler named Bogus"),
        (json!({"hr_sampler_name": "Nope"}), 500, "AssertionError", "bad sampler name: Nope"),
        (json!({"hr_checkpoint_name": "nope"}), 500, "Exception", "Could not find checkpoint with name nope"),
        (
            json!({"denoising_strength": null}),
            500,
            "TypeError",
            "'>' not supported between instances of 'NoneType' and 'int'",
        ),
        (json!({"hr_scale": 100, "width": 512, "height": 512}), 422, "HTTPException", ""),
        (json!({"hr_resize_x": -5}), 422, "HTTPException", ""),
        (json!({"hr_second_pass_steps": -1}), 422, "HTTPException", ""),
    ];
    for (extra, status, error, errors) in cases {
        let (got, resp) = send(&app, post_json("/sdapi/v1/txt2img", &hires(extra.clone()))).await;
        let v = body_json(resp).await;
        assert_eq!(got, status, "{extra}: {v}");
        assert_eq!(v["error"], error, "{extra}: {v}");
        if status == 500 {
            assert_eq!(v["errors"], errors, "{extra}: {v}");
        } else {
            assert!(!v["detail"].as_str().unwrap().is_empty(), "{extra}: {v}");
        }
    }
    assert!(runner.jobs.lock().unwrap().is_empty(), "refused before anything was queued");
    let (status, _) = send(&app, get("/internal/ping")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_hires_request_queues_its_second_pass_with_each_batch() {
    let (app, runner) = app_with(test_config());
    let body = hires(json!({"hr_resize_x": 96, "hr_resize_y": 128, "hr_upscaler": "Latent (nearest-exact)",
                            "hr_second_pass_steps": 4, "hr_sampler_name": "DPM++ 2M", "n_iter": 2}));
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", &body)).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    let jobs = runner.jobs.lock().unwrap();
    assert_eq!(jobs.len(), 2);
    let pass = jobs[0].hires.as_ref().expect("second pass");
    assert_eq!((jobs[0].width, jobs[0].height), (64, 64), "the first pass keeps the request's size");
    assert_eq!((pass.upscale_width, pass.upscale_height, pass.truncate_x, pass.truncate_y), (128, 128, 4, 0));
    assert_eq!(pass.latent_size(), (16, 12));
    assert_eq!(pass.upscale, HiresUpscale::Latent(LatentUpscaleMode::LatentNearestExact));
    assert_eq!((pass.steps, pass.denoising_strength, pass.sampler.name()), (4, 0.5, "DPM++ 2M"));
    assert_eq!(pass.prompts, vec!["x".to_string()]);
    let info: serde_json::Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    let extra = &info["extra_generation_params"];
    assert_eq!(extra["Hires resize"], "96x128");
    assert_eq!(extra["Hires sampler"], "DPM++ 2M");
    assert_eq!(extra["Hires steps"], 4);
    assert!(extra["Hires prompt"].is_null());
    let infotext = info["infotexts"][0].as_str().unwrap();
    assert!(infotext.contains("Denoising strength: 0.5, Hires sampler: DPM++ 2M, Hires resize: 96x128, Hires steps: 4, Hires upscaler: Latent (nearest-exact)"), "{infotext}");
}

#[tokio::test]
async fn a_different_hires_prompt_is_in_the_infotext() {
    let (app, runner) = app_with(test_config());
    let body = hires(json!({"hr_prompt": "a sharper x"}));
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", &body)).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(runner.jobs.lock().unwrap()[0].hires.as_ref().unwrap().prompts, vec!["a sharper x".to_string()]);
    let info: serde_json::Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert!(info["extra_generation_params"]["Hires prompt"].is_null(), "info keeps A1111's null");
    assert!(info["infotexts"][0].as_str().unwrap().contains("Hires prompt: a sharper x,"), "{info}");
}

/// "SD upscale" through img2img: one runner job per batch of tiles; bad arguments get clear errors.
#[tokio::test]
async fn sd_upscale_script_runs_tiles_and_checks_its_arguments() {
    let (app, runner) = app_with(test_config());
    use base64::Engine;
    let png = std::fs::read(repo_root().join("tests/fixtures/a1111-parity/init_images/init_a_64x64.png")).unwrap();
    let image = base64::engine::general_purpose::STANDARD.encode(png);
    let body = |args: serde_json::Value| {
        json!({"prompt": "x", "init_images": [image.clone()], "steps": 2, "width": 64, "height": 64,
               "script_name": "SD Upscale", "script_args": args, "batch_size": 4})
        .to_string()
    };
    let (status, resp) = send(&app, post_json("/sdapi/v1/img2img", &body(json!(["", 8, "Lanczos", 2.0])))).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    // 128x128 in 64x64 tiles overlapping by 8: 3x3 tiles, in batches of 4 → 3 jobs. The last
    // batch holds one tile, which A1111's img2img repeats to the batch size (one image is used).
    let sizes: Vec<usize> = runner.jobs.lock().unwrap().iter().map(|j| j.seeds.len()).collect();
    assert_eq!(sizes, vec![4, 4, 4]);
    let info: serde_json::Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert!(
        info["infotexts"][0].as_str().unwrap().contains("SD upscale overlap: 8, SD upscale upscaler: Lanczos"),
        "{info}"
    );
    let bytes = base64::engine::general_purpose::STANDARD.decode(v["images"][0].as_str().unwrap()).unwrap();
    assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 128);

    for (args, status, error) in [
        (json!(["", 8, "Lanczos"]), 422, "HTTPException"),
        (json!(["", 8, "NoSuchUpscaler", 2.0]), 500, "ValueError"),
        (json!(["", 8, 99, 2.0]), 500, "IndexError"),
    ] {
        let (got, resp) = send(&app, post_json("/sdapi/v1/img2img", &body(args.clone()))).await;
        let v = body_json(resp).await;
        assert_eq!((got, v["error"].as_str().unwrap()), (status, error), "{args}: {v}");
    }
    let (status, resp) =
        send(&app, post_json("/sdapi/v1/txt2img", &json!({"script_name": "sd upscale"}).to_string())).await;
    assert_eq!(status, 422, "txt2img has no SD upscale");
    assert_eq!(body_json(resp).await["detail"], "Script 'sd upscale' not found");
}

/// "Poor man's outpainting": the border tiles go through the runner as inpainting runs; bad
/// arguments are refused before any of them.
#[tokio::test]
async fn poor_mans_outpainting_runs_border_tiles_and_checks_its_arguments() {
    let (app, runner) = app_with(test_config());
    use base64::Engine;
    let png = std::fs::read(repo_root().join("tests/fixtures/a1111-parity/init_images/init_a_64x64.png")).unwrap();
    let image = base64::engine::general_purpose::STANDARD.encode(png);
    let body = |args: serde_json::Value| {
        json!({"prompt": "x", "init_images": [image.clone()], "steps": 2, "width": 64, "height": 64,
               "script_name": "Poor man's outpainting", "script_args": args})
        .to_string()
    };
    for args in [
        json!([16, 4, "fill"]),
        json!([16, 4, "no such fill", ["left"]]),
        json!([-8, 4, "fill", ["left"]]),
        json!([64, 4, "fill", ["left"]]),
        json!([16, 4, "fill", "left"]),
    ] {
        let (got, resp) = send(&app, post_json("/sdapi/v1/img2img", &body(args.clone()))).await;
        let v = body_json(resp).await;
        assert_eq!(got, 422, "{args}: {v}");
        assert!(v["detail"].as_str().unwrap().contains("Poor man's outpainting"), "{args}: {v}");
    }
    assert!(runner.jobs.lock().unwrap().is_empty(), "nothing ran for bad arguments");

    // 16 px to the left and right: a 128x64 canvas (the original at x 32..96) in 64x64 tiles
    // overlapping by 16 at x 0, 32 and 64; the middle one is the original and is kept.
    let (status, resp) =
        send(&app, post_json("/sdapi/v1/img2img", &body(json!([16, 4, "fill", ["left", "right"]])))).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(runner.jobs.lock().unwrap().len(), 2);
    let bytes = base64::engine::general_purpose::STANDARD.decode(v["images"][0].as_str().unwrap()).unwrap();
    assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 128);
}

/// "Loopback": each loop's output is the next loop's init image, the strength moves linearly to
/// the final one, seeds count up; with one batch the grid of all loops comes first.
#[tokio::test]
async fn loopback_script_feeds_each_output_back() {
    let (app, runner) = app_with(test_config());
    use base64::Engine;
    let png = std::fs::read(repo_root().join("tests/fixtures/a1111-parity/init_images/init_a_64x64.png")).unwrap();
    let image = base64::engine::general_purpose::STANDARD.encode(png);
    let body = json!({"prompt": "x", "init_images": [image], "steps": 2, "width": 64, "height": 64, "seed": 10,
                      "denoising_strength": 0.7, "script_name": "Loopback", "script_args": [3, 0.3, "Linear", "None"]});
    let (status, resp) = send(&app, post_json("/sdapi/v1/img2img", &body.to_string())).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    let jobs = runner.jobs.lock().unwrap();
    let seeds: Vec<i64> = jobs.iter().map(|j| j.seeds[0]).collect();
    assert_eq!(seeds, vec![10, 11, 12]);
    let strengths: Vec<f64> = jobs
        .iter()
        .map(|j| match &j.mode {
            sdapi_core::runner::JobMode::Img2Img { denoising_strength, .. } => *denoising_strength,
            _ => f64::NAN,
        })
        .collect();
    assert_eq!(strengths, vec![0.7, 0.5, 0.3]);
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 4, "the grid, then the three loops");
    let grid = base64::engine::general_purpose::STANDARD.decode(images[0].as_str().unwrap()).unwrap();
    assert_eq!(image::load_from_memory(&grid).unwrap().width(), 192);
    let info: serde_json::Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert!(
        info["infotexts"][0].as_str().unwrap().contains("Final denoising strength: 0.3, Denoising curve: Linear"),
        "{info}"
    );
}

/// "Prompts from file or textbox": one generation per line, command-line lines set fields, the
/// request's prompt is appended after each line's prompt, seeds iterate per line when asked.
#[tokio::test]
async fn prompts_from_file_runs_one_generation_per_line() {
    let (app, runner) = app_with(test_config());
    let lines = "a red cube\n\n--prompt \"a blue ball\" --steps 5 --width 128\n--steps notanumber here\n";
    let body = json!({"prompt": "on a table", "steps": 2, "width": 64, "height": 64, "seed": 7,
                      "script_name": "prompts from file or textbox", "script_args": [true, false, "start", lines]});
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", &body.to_string())).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    let seen: Vec<(String, usize, usize, i64)> =
        runner.jobs.lock().unwrap().iter().map(|j| (j.prompts[0].clone(), j.steps, j.width, j.seeds[0])).collect();
    assert_eq!(
        seen,
        vec![
            ("a red cube on a table".to_string(), 2, 64, 7),
            ("a blue ball on a table".to_string(), 5, 128, 8),
            // Not a valid command line: the whole line is the prompt.
            ("--steps notanumber here on a table".to_string(), 2, 64, 9),
        ]
    );
    assert_eq!(v["images"].as_array().unwrap().len(), 3);
    let info: serde_json::Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["infotexts"].as_array().unwrap().len(), 3);
    let (status, _) = send(
        &app,
        post_json(
            "/sdapi/v1/txt2img",
            &json!({"script_name": "prompts from file or textbox", "script_args": [true]}).to_string(),
        ),
    )
    .await;
    assert_eq!(status, 422);
}

/// "Prompt matrix": one image per combination of the optional parts, batched by `batch_size`
/// (the last batch short), each with its own prompt and seed, then the labelled grid in front.
#[tokio::test]
async fn prompt_matrix_runs_every_combination_and_puts_the_labelled_grid_first() {
    let (app, runner) = app_with(test_config());
    let body = |args: serde_json::Value| {
        json!({"prompt": "a cat|red|big", "negative_prompt": "blurry", "seed": 100, "steps": 2, "width": 64,
               "height": 64, "batch_size": 3, "script_name": "Prompt matrix", "script_args": args})
        .to_string()
    };
    for (args, status, error) in [
        (json!([true]), 422, "HTTPException"),
        (json!([false, false, "both", "comma", 0]), 500, "ValueError"),
        (json!([false, false, "positive", "comma", 100000]), 422, "HTTPException"),
    ] {
        let (got, resp) = send(&app, post_json("/sdapi/v1/txt2img", &body(args.clone()))).await;
        let v = body_json(resp).await;
        assert_eq!((got, v["error"].as_str().unwrap()), (status, error), "{args}: {v}");
    }
    assert!(runner.jobs.lock().unwrap().is_empty(), "nothing ran for bad arguments");

    let (status, resp) =
        send(&app, post_json("/sdapi/v1/txt2img", &body(json!([false, true, "positive", "comma", 4])))).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    let jobs = runner.jobs.lock().unwrap().clone();
    let prompts: Vec<Vec<String>> = jobs.iter().map(|j| j.prompts.clone()).collect();
    assert_eq!(prompts, vec![vec!["a cat", "a cat, red", "a cat, big"], vec!["a cat, red, big"]]);
    let seeds: Vec<Vec<i64>> = jobs.iter().map(|j| j.seeds.clone()).collect();
    assert_eq!(seeds, vec![vec![100, 101, 102], vec![103]], "different seeds per picture");
    assert!(jobs.iter().all(|j| j.negative_prompts.iter().all(|n| n == "blurry")));

    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 5, "the grid, then the four combinations");
    use base64::Engine;
    let decode = |i: usize| {
        let bytes = base64::engine::general_purpose::STANDARD.decode(images[i].as_str().unwrap()).unwrap();
        image::load_from_memory(&bytes).unwrap().to_rgb8()
    };
    let grid = decode(0);
    // 2 × 2 cells of 64², labels left (64·3/4 = 48 px) and on top, 4 px margins between cells.
    assert_eq!(grid.width(), 48 + 2 * 64 + 4);
    assert!(grid.height() > 2 * 64 + 4);
    assert_eq!(decode(1).width(), 64);
    let info: serde_json::Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["index_of_first_image"], 1);
    assert_eq!(info["all_seeds"], json!([100, 101, 102, 103]));
    let infotexts: Vec<&str> = info["infotexts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(infotexts.len(), 5);
    assert_eq!(infotexts[0], infotexts[1], "the grid carries the first image's infotext");
    assert!(infotexts[2].starts_with("a cat, red\nNegative prompt: blurry\n"), "{}", infotexts[2]);
    assert!(infotexts[4].contains("Seed: 103,"), "{}", infotexts[4]);
}

fn xyz_args(x: (u64, &str), y: (u64, &str), lone: bool, sub_grids: bool, csv: bool) -> serde_json::Value {
    json!([x.0, x.1, [], y.0, y.1, [], 0, "", [], true, lone, sub_grids, false, false, false, false, 0, csv])
}

/// "X/Y/Z plot": one generation per cell (z outermost, then y, then x), the grid of them
/// labelled in front, the axes named in its infotext; bad axes fail before anything runs.
#[tokio::test]
async fn xyz_plot_runs_each_cell_and_returns_the_labelled_grid() {
    let (app, runner) = app_with(test_config());
    let body = |args: serde_json::Value| {
        json!({"prompt": "a cat", "seed": 7, "steps": 2, "width": 64, "height": 64,
               "script_name": "X/Y/Z plot", "script_args": args})
        .to_string()
    };
    // Steps on X (txt2img index 4), CFG Scale on Y (index 6).
    let (status, resp) =
        send(&app, post_json("/sdapi/v1/txt2img", &body(xyz_args((4, "2,3"), (6, "5, 7.5"), false, false, false))))
            .await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    let jobs = runner.jobs.lock().unwrap().clone();
    let cells: Vec<(usize, f64)> = jobs.iter().map(|j| (j.steps, j.cfg_scale)).collect();
    assert_eq!(cells, vec![(2, 5.0), (3, 5.0), (2, 7.5), (3, 7.5)]);
    assert!(jobs.iter().all(|j| j.seeds == vec![7]));
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "only the grid without sub-images");
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(images[0].as_str().unwrap()).unwrap();
    let grid = image::load_from_memory(&bytes).unwrap();
    assert_eq!(grid.width(), 48 + 2 * 64, "row labels (64·3/4) and two columns");
    assert!(grid.height() > 2 * 64, "column labels on top");
    let info: serde_json::Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    let first = info["infotexts"][0].as_str().unwrap();
    assert!(
        first.contains("Script: X/Y/Z plot, X Type: Steps, X Values: \"2,3\", Y Type: CFG Scale, Y Values: \"5, 7.5\""),
        "{first}"
    );
    assert_eq!(info["index_of_first_image"], 1);

    // Sub-images and sub-grids kept; a seed range on X, Prompt S/R on Y.
    runner.jobs.lock().unwrap().clear();
    let (status, resp) =
        send(&app, post_json("/sdapi/v1/txt2img", &body(xyz_args((1, "1-3"), (7, "cat, dog"), true, true, false))))
            .await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    let jobs = runner.jobs.lock().unwrap().clone();
    let cells: Vec<(i64, String)> = jobs.iter().map(|j| (j.seeds[0], j.prompts[0].clone())).collect();
    let expected: Vec<(i64, String)> =
        [("a cat", 1), ("a cat", 2), ("a cat", 3), ("a dog", 1), ("a dog", 2), ("a dog", 3)]
            .iter()
            .map(|(p, s)| (*s, p.to_string()))
            .collect();
    assert_eq!(cells, expected);
    assert_eq!(v["images"].as_array().unwrap().len(), 1 + 1 + 6, "grid, sub-grid, six cells");
    let info: serde_json::Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert!(info["infotexts"][0].as_str().unwrap().contains("Fixed X Values: \"1, 2, 3\""), "{info}");

    runner.jobs.lock().unwrap().clear();
    for (args, status, error) in [
        (json!([4, "2"]), 422, "HTTPException"),
        (xyz_args((9, "Euler, Nope"), (0, ""), false, false, true), 500, "RuntimeError"),
        (xyz_args((4, "2, x"), (0, ""), false, false, false), 500, "ValueError"),
        (xyz_args((7, "horse, dog"), (0, ""), false, false, false), 500, "RuntimeError"),
        (xyz_args((99, ""), (0, ""), false, false, false), 500, "IndexError"),
    ] {
        let (got, resp) = send(&app, post_json("/sdapi/v1/txt2img", &body(args.clone()))).await;
        let v = body_json(resp).await;
        assert_eq!((got, v["error"].as_str().unwrap()), (status, error), "{args}: {v}");
    }
    assert!(runner.jobs.lock().unwrap().is_empty(), "nothing ran for bad axes");
}
