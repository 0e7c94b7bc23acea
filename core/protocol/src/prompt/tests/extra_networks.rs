use crate::prompt::extra_networks::{parse_extra_networks, strip_comments};

/// Expected outputs computed with Python's `re` on A1111's patterns.
#[test]
fn strips_comments_like_a1111() {
    let cases = [
        ("a\n#c1\n#c2\nb", "a\n\nb"),
        ("#top\nx", "\nx"),
        ("x # tail", "x \n"),
        ("a #b\nc #d", "a \nc \n"),
        ("no comment", "no comment"),
        ("#", "\n"),
        ("a\n#", "a\n"),
        ("##\n#\n", "\n\n"),
        ("x\n\n#y\nz", "x\n\nz"),
    ];
    for (input, expected) in cases {
        assert_eq!(strip_comments(input), expected, "{input:?}");
    }
}

#[test]
fn extracts_and_removes_tags() {
    let (text, tags) = parse_extra_networks("a <lora:foo:0.8> b");
    assert_eq!(text, "a  b");
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].kind, "lora");
    assert_eq!(tags[0].items, vec!["foo", "0.8"]);
    assert_eq!(tags[0].positional, vec!["foo", "0.8"]);

    let (text, tags) = parse_extra_networks("x <hypernet:n:te=1:unet=0.5:a=b=c> y");
    assert_eq!(text, "x  y");
    assert_eq!(tags[0].positional, vec!["n", "a=b=c"]);
    assert_eq!(tags[0].named, vec![("te".to_string(), "1".to_string()), ("unet".to_string(), "0.5".to_string())]);

    for (input, expected_text, count) in [
        ("<a<lora:x:1>", "<a", 1),
        ("<lora:>", "<lora:>", 0),
        ("<:x>", "<:x>", 0),
        ("<lora:a>b>", "b>", 1),
        ("<lo-ra:x>", "<lo-ra:x>", 0),
    ] {
        let (text, tags) = parse_extra_networks(input);
        assert_eq!(text, expected_text, "{input:?}");
        assert_eq!(tags.len(), count, "{input:?}");
    }
}
