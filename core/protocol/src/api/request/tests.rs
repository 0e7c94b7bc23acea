use super::*;
use serde_json::json;

/// docs/a1111-behaviour.md §1.2 of the spec, transcribed by hand (field order and declared defaults).
fn spec_txt2img_defaults() -> Value {
    serde_json::from_str(
        r#"{
        "prompt": "", "negative_prompt": "", "styles": null, "seed": -1, "subseed": -1,
        "subseed_strength": 0, "seed_resize_from_h": -1, "seed_resize_from_w": -1,
        "sampler_name": null, "scheduler": null, "batch_size": 1, "n_iter": 1, "steps": 50,
        "cfg_scale": 7.0, "width": 512, "height": 512, "restore_faces": null, "tiling": null,
        "do_not_save_samples": false, "do_not_save_grid": false, "eta": null,
        "denoising_strength": null, "s_min_uncond": null, "s_churn": null, "s_tmax": null,
        "s_tmin": null, "s_noise": null, "override_settings": null,
        "override_settings_restore_afterwards": true, "refiner_checkpoint": null,
        "refiner_switch_at": null, "disable_extra_networks": false, "firstpass_image": null,
        "comments": null, "enable_hr": false, "firstphase_width": 0, "firstphase_height": 0,
        "hr_scale": 2.0, "hr_upscaler": null, "hr_second_pass_steps": 0, "hr_resize_x": 0,
        "hr_resize_y": 0, "hr_checkpoint_name": null, "hr_sampler_name": null,
        "hr_scheduler": null, "hr_prompt": "", "hr_negative_prompt": "", "force_task_id": null,
        "sampler_index": "Euler", "script_name": null, "script_args": [], "send_images": true,
        "save_images": false, "alwayson_scripts": {}, "infotext": null
    }"#,
    )
    .unwrap()
}

/// docs/a1111-behaviour.md §1.3: fields 1–34 as txt2img (img2img denoising_strength 0.75), then its own fields.
fn spec_img2img_defaults() -> Value {
    let t = spec_txt2img_defaults();
    let t = t.as_object().unwrap();
    let mut m = Map::new();
    for (k, v) in t.iter().take(34) {
        m.insert(k.clone(), if k == "denoising_strength" { json!(0.75) } else { v.clone() });
    }
    let tail = json!({
        "init_images": null, "resize_mode": 0, "image_cfg_scale": null, "mask": null,
        "mask_blur_x": 4, "mask_blur_y": 4, "mask_blur": null, "mask_round": true,
        "inpainting_fill": 0, "inpaint_full_res": true, "inpaint_full_res_padding": 0,
        "inpainting_mask_invert": 0, "initial_noise_multiplier": null, "latent_mask": null,
        "force_task_id": null, "sampler_index": "Euler", "include_init_images": false,
        "script_name": null, "script_args": [], "send_images": true, "save_images": false,
        "alwayson_scripts": {}, "infotext": null
    });
    for (k, v) in tail.as_object().unwrap() {
        m.insert(k.clone(), v.clone());
    }
    Value::Object(m)
}

fn keys(v: &Map<String, Value>) -> Vec<&str> {
    v.keys().map(|k| k.as_str()).collect()
}

#[test]
fn txt2img_defaults_in_order_and_uncoerced() {
    let req = Txt2ImgRequest::from_json(&json!({})).unwrap();
    let params = req.to_parameters();
    let want = spec_txt2img_defaults();
    assert_eq!(keys(&params), keys(want.as_object().unwrap()));
    assert_eq!(params.len(), 55);
    // Value equality distinguishes int 0 from float 0.0, so this also checks "not coerced".
    assert_eq!(Value::Object(params), want);
    assert_eq!(req.steps, Some(50));
    assert_eq!(req.requested_sampler(), "Euler");
    assert!(req.fields.explicitly_set.is_empty());
}

#[test]
fn img2img_defaults_in_order() {
    let req = Img2ImgRequest::from_json(&json!({})).unwrap();
    let want = spec_img2img_defaults();
    assert_eq!(keys(&req.fields.values), keys(want.as_object().unwrap()));
    assert_eq!(Value::Object(req.fields.values.clone()), want);
    assert_eq!(req.denoising_strength, 0.75);
}

/// One coercible input and its pydantic v1 result per field type, plus a rejected input and
/// its error type. Derived from pydantic 1.10's validators (see api::lax).
fn coercion_case(kind: FieldKind) -> (Value, Value, Value, &'static str) {
    match kind {
        FieldKind::Int => (json!("12"), json!(12), json!("twelve"), "type_error.integer"),
        FieldKind::Float => (json!(3), json!(3.0), json!("x"), "type_error.float"),
        FieldKind::Bool => (json!("yes"), json!(true), json!("maybe"), "type_error.bool"),
        FieldKind::Str => (json!(5), json!("5"), json!({"a": 1}), "type_error.str"),
        FieldKind::StrList => (json!(["a", 1]), json!(["a", "1"]), json!(7), "type_error.list"),
        FieldKind::List => (json!([1, "b"]), json!([1, "b"]), json!("abc"), "type_error.list"),
        FieldKind::StrDict | FieldKind::Dict => (json!([["k", 1]]), json!({"k": 1}), json!(5), "type_error.dict"),
    }
}

fn check_table_coercions(fields: &[FieldSpec], parse: impl Fn(&Value) -> Result<ValidatedFields, ValidationErrors>) {
    for f in fields {
        let (input, want, bad, bad_type) = coercion_case(f.kind);
        let got = parse(&json!({ f.name: input })).unwrap_or_else(|e| panic!("{}: {:?}", f.name, e));
        assert_eq!(got.get(f.name), &want, "field {}", f.name);
        assert!(got.is_set(f.name));
        let err = parse(&json!({ f.name: bad })).expect_err(f.name);
        assert_eq!(err.detail.len(), 1);
        assert_eq!(err.detail[0].loc, vec![json!("body"), json!(f.name)], "{}", f.name);
        assert_eq!(err.detail[0].kind, bad_type, "{}", f.name);
    }
}

#[test]
fn every_field_coerces_and_rejects_like_pydantic() {
    check_table_coercions(TXT2IMG_FIELDS, |v| Txt2ImgRequest::from_json(v).map(|r| r.fields));
    check_table_coercions(IMG2IMG_FIELDS, |v| Img2ImgRequest::from_json(v).map(|r| r.fields));
}

#[test]
fn specific_coercions() {
    let r = Txt2ImgRequest::from_json(&json!({"steps": 5.7, "subseed_strength": 0, "cfg_scale": "7", "styles": []}))
        .unwrap();
    assert_eq!(r.steps, Some(5));
    assert_eq!(r.fields.get("subseed_strength"), &json!(0.0));
    assert_eq!(r.fields.get("cfg_scale"), &json!(7.0));
    let r = Img2ImgRequest::from_json(&json!({"inpainting_mask_invert": true, "mask_blur": "4"})).unwrap();
    assert_eq!(r.inpainting_mask_invert, Some(1));
    assert_eq!(r.mask_blur, Some(4));
}

#[test]
fn null_rules_of_section_10_1() {
    // docs/a1111-behaviour.md §10.1: null is rejected only for these fields.
    let t2i_rejects = ["sampler_index", "script_args", "send_images", "save_images", "alwayson_scripts"];
    let i2i_rejects = [&t2i_rejects[..], &["denoising_strength", "include_init_images"]].concat();
    for f in TXT2IMG_FIELDS {
        let r = Txt2ImgRequest::from_json(&json!({ f.name: null }));
        if t2i_rejects.contains(&f.name) {
            let e = r.expect_err(f.name);
            assert_eq!(e.detail[0].msg, "none is not an allowed value");
            assert_eq!(e.detail[0].kind, "type_error.none.not_allowed");
        } else {
            assert_eq!(r.unwrap().fields.get(f.name), &Value::Null, "{}", f.name);
        }
    }
    for f in IMG2IMG_FIELDS {
        let r = Img2ImgRequest::from_json(&json!({ f.name: null }));
        assert_eq!(r.is_err(), i2i_rejects.contains(&f.name), "{}", f.name);
    }
}

#[test]
fn all_errors_collected_in_field_order() {
    let e =
        Txt2ImgRequest::from_json(&json!({"width": "w", "steps": "s", "send_images": null, "unknown": 1})).unwrap_err();
    let locs: Vec<_> = e.detail.iter().map(|d| d.loc[1].clone()).collect();
    assert_eq!(locs, vec![json!("steps"), json!("width"), json!("send_images")]);
    let body = serde_json::to_value(&e).unwrap();
    assert_eq!(
        body["detail"][0],
        json!({"loc": ["body", "steps"], "msg": "value is not a valid integer", "type": "type_error.integer"})
    );
}

#[test]
fn list_item_errors_carry_the_index() {
    let e = Txt2ImgRequest::from_json(&json!({"styles": ["a", {"x": 1}]})).unwrap_err();
    assert_eq!(e.detail[0].loc, vec![json!("body"), json!("styles"), json!(1)]);
    assert_eq!(e.detail[0].kind, "type_error.str");
}

#[test]
fn non_object_bodies() {
    for body in [json!([1, 2]), json!("text"), json!(3)] {
        let e = Txt2ImgRequest::from_json(&body).unwrap_err();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"detail": [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}]})
        );
    }
    let e = Txt2ImgRequest::from_json(&Value::Null).unwrap_err();
    assert_eq!(e.detail[0].kind, "value_error.missing");
    let e = parse_body(b"").unwrap_err();
    assert_eq!(e.detail[0].msg, "field required");
}

#[test]
fn json_decode_errors_look_like_python() {
    // Python: json.loads("") / json.loads("x") → "Expecting value: line 1 column 1 (char 0)"
    let e = parse_body(b"x").unwrap_err();
    assert_eq!(e.detail[0].msg, "Expecting value: line 1 column 1 (char 0)");
    assert_eq!(e.detail[0].loc, vec![json!("body"), json!(0)]);
    assert_eq!(e.detail[0].kind, "value_error.jsondecode");
    // json.loads('{"a": 1} x') → "Extra data: line 1 column 10 (char 9)"
    let e = parse_body(br#"{"a": 1} x"#).unwrap_err();
    assert_eq!(e.detail[0].msg, "Extra data: line 1 column 10 (char 9)");
}

#[test]
fn img2img_echo_nulls_images_unless_asked() {
    let body = json!({"init_images": ["abc"], "mask": "m"});
    let r = Img2ImgRequest::from_json(&body).unwrap();
    let p = r.to_parameters();
    assert_eq!(p["init_images"], Value::Null);
    assert_eq!(p["mask"], Value::Null);
    assert_eq!(r.init_images, Some(vec![json!("abc")]));
    let r = Img2ImgRequest::from_json(&json!({"init_images": ["abc"], "mask": "m", "include_init_images": "true"}))
        .unwrap();
    assert_eq!(r.to_parameters()["init_images"], json!(["abc"]));
}

#[test]
fn set_field_updates_typed_view() {
    let mut r = Txt2ImgRequest::from_json(&json!({"steps": 3})).unwrap();
    r.set_field("cfg_scale", json!(5.5));
    assert_eq!(r.cfg_scale, Some(5.5));
    assert_eq!(r.steps, Some(3));
    assert_eq!(r.to_parameters()["cfg_scale"], json!(5.5));
}

#[test]
fn schema_lists_every_field() {
    let s = Txt2ImgRequest::json_schema();
    assert_eq!(s["title"], "StableDiffusionProcessingTxt2Img");
    assert_eq!(s["properties"].as_object().unwrap().len(), 55);
    assert_eq!(s["properties"]["steps"]["default"], json!(50));
    assert_eq!(s["properties"]["send_images"].get("nullable"), None);
}
