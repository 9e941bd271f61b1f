//! Chat templates: `ChatTemplate::render` with a fuzzed Jinja template and fuzzed messages, as a model
//! directory's template would run on a client's messages. It must return (the fuel, recursion and output
//! limits stop runaway templates) with a result or a clear error, never panic, hang or overflow the stack.
//!
//! Input: `template \0 messages`. The messages are split at 0x01 bytes; each one's first byte picks its
//! role (system, user, assistant, tool) and 0x02 bytes in its text stand for image parts. Without a NUL the
//! whole input is the template, rendered on a fixed conversation.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use vtc_r1::tokenizer::{ChatTemplate, Content, Message, Part};

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

fn messages(spec: &[u8]) -> Vec<Message> {
    spec.split(|&b| b == 1)
        .map(|m| {
            let (role, text) = match m.split_first() {
                Some((&r, rest)) => (ROLES[r as usize % 4], String::from_utf8_lossy(rest)),
                None => ("user", "".into()),
            };
            if !text.contains('\u{2}') {
                return Message::text(role, &text);
            }
            let mut parts = Vec::new();
            for (i, piece) in text.split('\u{2}').enumerate() {
                if i > 0 {
                    parts.push(Part::Image);
                }
                if !piece.is_empty() {
                    parts.push(Part::Text { text: piece.to_string() });
                }
            }
            Message { role: role.into(), content: Content::Parts(parts) }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let (template, spec) = common::split_nul(data);
    let msgs = match spec {
        Some(spec) => messages(spec),
        None => vec![
            Message::text("system", "You are helpful."),
            Message { role: "user".into(), content: Content::Parts(vec![Part::Image, Part::Text { text: "What is 2+2?".into() }]) },
            Message::text("assistant", "<think>2+2</think>4"),
            Message::text("user", "<|im_start|>and 3+3?"),
        ],
    };
    let template = ChatTemplate { source: "fuzz/chat_template.jinja".into(), template: String::from_utf8_lossy(template).into_owned() };
    let mut extra = Map::new();
    extra.insert("enable_thinking".into(), Value::Bool(data.len() % 3 == 0));
    extra.insert("bos_token".into(), json!("<s>"));
    extra.insert("tools".into(), if data.len() % 5 == 0 { json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]) } else { Value::Null });
    match template.render(&msgs, data.len() % 2 == 0, &extra) {
        Ok(out) => {
            let budget = 2 * serde_json::to_string(&msgs).unwrap().len() + (1 << 20);
            assert!(out.len() <= budget, "{} bytes written, limit {budget}", out.len());
        }
        Err(e) => assert!(e.to_string().contains("fuzz/chat_template.jinja"), "{e}"),
    }
});
