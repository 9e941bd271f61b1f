//! Chat templates: where they are found in a model directory, and the Jinja features Qwen-family
//! templates rely on (namespaces mutated in loops, `in` on mappings, look-behind via
//! `messages[loop.index0 - 1]`, `tojson`, whitespace control with trim_blocks/lstrip_blocks).

mod common;

use common::*;
use serde_json::json;
use vtc_r1::tokenizer::{ChatTemplate, Content, Message, Part, Tokenizer};

const TEMPLATE: &str = r#"{%- set image_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if tools %}{{- '\n' + (tools | tojson) }}{% endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

fn messages() -> Vec<Message> {
    vec![
        Message {
            role: "user".into(),
            content: Content::Parts(vec![Part::Image, Part::Text { text: "What is on 2 pages?".into() }, Part::Image]),
        },
        Message::text("tool", "a"),
        Message::text("tool", "b"),
    ]
}

#[test]
fn qwen_style_constructs_render_like_jinja2() {
    let t = ChatTemplate { source: "test".into(), template: TEMPLATE.into() };
    let out = t.render(&messages(), true, &serde_json::Map::new()).unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is on 2 pages?<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n\
         <|im_start|>user\n<tool_response>\na\n</tool_response>\n<tool_response>\nb\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    );
    let mut extra = serde_json::Map::new();
    extra.insert("add_vision_id".into(), json!(true));
    extra.insert("tools".into(), json!([{"name": "f", "parameters": {"x": "<y>"}}]));
    let out = t.render(&messages()[..1], false, &extra).unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>What is on 2 pages?Picture 2: <|vision_start|><|image_pad|><|vision_end|>\n\
         [{\"name\": \"f\", \"parameters\": {\"x\": \"<y>\"}}]<|im_end|>\n"
    );
}

#[test]
fn template_is_found_in_each_supported_file() {
    let msgs = vec![Message::text("user", "hi")];
    let render = |d: &TempDir| ChatTemplate::from_dir(d.path()).unwrap().unwrap().render(&msgs, false, &Default::default()).unwrap();

    let d = TempDir::new("tmpl-jinja");
    std::fs::write(d.path().join("chat_template.jinja"), "J{{ messages[0].content }}").unwrap();
    std::fs::write(d.path().join("chat_template.json"), json!({"chat_template": "X"}).to_string()).unwrap();
    assert_eq!(render(&d), "Jhi");

    let d = TempDir::new("tmpl-json");
    std::fs::write(d.path().join("chat_template.json"), json!({"chat_template": "C{{ messages[0].content }}"}).to_string()).unwrap();
    std::fs::write(d.path().join("tokenizer_config.json"), json!({"chat_template": "X"}).to_string()).unwrap();
    assert_eq!(render(&d), "Chi");

    let d = TempDir::new("tmpl-tokcfg");
    std::fs::write(d.path().join("tokenizer_config.json"), json!({"chat_template": "T{{ messages[0].content }}"}).to_string()).unwrap();
    assert_eq!(render(&d), "Thi");

    let d = TempDir::new("tmpl-list");
    let list = json!([{"name": "tool_use", "template": "U"}, {"name": "default", "template": "D{{ messages[0].content }}"}]);
    std::fs::write(d.path().join("tokenizer_config.json"), json!({"chat_template": list}).to_string()).unwrap();
    assert_eq!(render(&d), "Dhi");

    let d = TempDir::new("tmpl-none");
    std::fs::write(d.path().join("tokenizer_config.json"), json!({"model_max_length": 10}).to_string()).unwrap();
    assert!(ChatTemplate::from_dir(d.path()).unwrap().is_none());

    // A syntax error names the file it came from.
    let d = TempDir::new("tmpl-bad");
    std::fs::write(d.path().join("chat_template.jinja"), "{% for m in messages %}").unwrap();
    let e = ChatTemplate::from_dir(d.path()).unwrap().unwrap().render(&msgs, false, &Default::default()).unwrap_err();
    assert_eq!(e.code(), "ERR_VTC_CHAT_TEMPLATE");
    assert!(e.to_string().contains("chat_template.jinja"), "{e}");
}

#[test]
fn real_tokenizer_round_trips_and_keeps_special_tokens_whole() {
    let tok = Tokenizer::from_dir(&e2e_dir()).unwrap();
    let ids = tok.encode("<|im_start|>user\nFind $17_b$ 时代中国<|im_end|>").unwrap();
    assert_eq!(ids[0], 151644);
    assert_eq!(*ids.last().unwrap(), 151645);
    assert_eq!(tok.decode(&ids, false).unwrap(), "<|im_start|>user\nFind $17_b$ 时代中国<|im_end|>");
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nFind $17_b$ 时代中国");
    assert_eq!(tok.token_to_id("<|image_pad|>"), Some(151655));
}
